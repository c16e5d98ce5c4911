"""A small 1-D CNN for signals ``(N, C, L)``.

Stages of conv(k=5) → batch norm → ReLU → 2× max-pool, widths w, 2w, 4w, …, down to about
4 steps, then one linear layer over the flattened final map (as in ``cnn.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.students.layers import Standardize

KERNEL = 5


@dataclass(frozen=True)
class CNN1DConfig:
    input_shape: tuple[int, int]  # (C, L)
    num_classes: int
    width: int = 16
    stages: int = 3


def build_cnn1d(cfg: CNN1DConfig) -> nn.Module:
    channels, length = cfg.input_shape
    layers: list[nn.Module] = [Standardize((channels, 1))]
    c_in = channels
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        layers.append(nn.Conv1d(c_in, c_out, KERNEL, padding=KERNEL // 2, bias=length == 1))
        if length > 1:  # batch norm needs more than one value per channel
            layers.append(nn.BatchNorm1d(c_out))
        layers.append(nn.ReLU())
        if length >= 2:
            layers.append(nn.MaxPool1d(2))
            length //= 2
        c_in = c_out
    layers += [nn.Flatten(), nn.Linear(c_in * length, cfg.num_classes)]
    return nn.Sequential(*layers)


def default_stages(length: int) -> int:
    """Enough stages to bring the signal down to about 4 steps, between 2 and 6."""
    stages = 0
    while length > 4 and stages < 6:
        length //= 2
        stages += 1
    return max(2, stages)


def cnn1d_for_width(input_shape: tuple[int, ...], num_classes: int, width: int) -> CNN1DConfig:
    c, length = input_shape
    return CNN1DConfig((c, length), num_classes, width, default_stages(length))


def cnn1d_parameters(cfg: CNN1DConfig) -> int:
    total, (c_in, length) = 0, cfg.input_shape
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        total += c_in * c_out * KERNEL + (2 * c_out if length > 1 else c_out)
        if length >= 2:
            length //= 2
        c_in = c_out
    return total + c_in * length * cfg.num_classes + cfg.num_classes
