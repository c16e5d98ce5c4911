"""A small VGG-style 2-D CNN for images ``(N, C, H, W)``.

Stages of conv3×3 → ReLU → 2×2 max-pool (while the map is at least 2 pixels wide), widths
w, 2w, 4w, …, then a global average pool and one linear layer. ``width`` is the knob the
auto sizing solves for.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from worker.distill.students.layers import Standardize


@dataclass(frozen=True)
class CNNConfig:
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    width: int = 16
    stages: int = 3


def build_cnn(cfg: CNNConfig) -> nn.Module:
    channels, height, width = cfg.input_shape
    layers: list[nn.Module] = [Standardize((channels, 1, 1))]
    c_in = channels
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.num_classes)]
    return nn.Sequential(*layers)


def default_stages(height: int, width: int) -> int:
    """Enough stages to bring the map down to about 2×2, between 2 and 5."""
    side, stages = min(height, width), 0
    while side > 2 and stages < 5:
        side //= 2
        stages += 1
    return max(2, stages)


def cnn_for_width(input_shape: tuple[int, ...], num_classes: int, width: int) -> CNNConfig:
    c, h, w = input_shape
    return CNNConfig((c, h, w), num_classes, width, default_stages(h, w))


def cnn_parameters(cfg: CNNConfig) -> int:
    total, c_in = 0, cfg.input_shape[0]
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        total += c_in * c_out * 9 + c_out
        c_in = c_out
    return total + c_in * cfg.num_classes + cfg.num_classes
