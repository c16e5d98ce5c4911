"""A small 1-D CNN for signals ``(N, C, L)``: conv(k=5) → ReLU → pool stages, global pool."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from worker.distill.students.layers import Standardize

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
        layers += [nn.Conv1d(c_in, c_out, KERNEL, padding=KERNEL // 2), nn.ReLU()]
        if length >= 2:
            layers.append(nn.MaxPool1d(2))
            length //= 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c_in, cfg.num_classes)]
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
    total, c_in = 0, cfg.input_shape[0]
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        total += c_in * c_out * KERNEL + c_out
        c_in = c_out
    return total + c_in * cfg.num_classes + cfg.num_classes
