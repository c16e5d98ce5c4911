"""A multi-layer perceptron over the flattened sample: fits inputs of any shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from worker.distill.students.layers import Standardize


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
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, cfg.num_classes))
    return nn.Sequential(*layers)


def mlp_for_width(
    input_shape: tuple[int, ...], num_classes: int, width: int, depth: int = 2
) -> MLPConfig:
    return MLPConfig(tuple(input_shape), num_classes, (width,) * depth)


def mlp_parameters(cfg: MLPConfig) -> int:
    widths = [math.prod(cfg.input_shape), *cfg.hidden, cfg.num_classes]
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
