"""A ResNet-style student for images ``(N, C, H, W)`` of at least 16×16 (He et al. 2016).

A stem (conv3×3-BN-ReLU, plus the stride-2 steps the stages do not take), then ``stages``
residual stages of ``blocks`` basic blocks each (conv3×3-BN-ReLU-conv3×3-BN, added to the
input, ReLU; a 1×1 projection where the shape changes), widths w, 2w, 4w, 8w, every stage
after the first halving the map; global average pool, linear head. The stride-2 steps are
as many as bring the map down to 4-7 pixels (``image_downsamplings``): at 224 px this is
ResNet-18's layout (stem conv + max-pool, 4 stages, a 7×7 final map) when ``blocks`` = 2;
at 32 px the stem keeps the resolution (as in the CIFAR ResNets) and 4 stages end at 4×4.
``width`` is the knob the auto sizing solves for; ``blocks`` is the depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.students.layers import Standardize, image_downsamplings

MAX_STAGES = 4


@dataclass(frozen=True)
class ResNetConfig:
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    width: int = 16
    blocks: int = 2  # basic blocks per stage
    stages: int = 4
    stem_downsamplings: int = 0  # 0: stride 1; 1: a stride-2 conv; 2: and a 3×3 max-pool


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def build_resnet(cfg: ResNetConfig) -> nn.Module:
    channels = cfg.input_shape[0]
    layers: list[nn.Module] = [
        Standardize((channels, 1, 1)),
        nn.Conv2d(channels, cfg.width, 3, 2 if cfg.stem_downsamplings else 1, 1, bias=False),
        nn.BatchNorm2d(cfg.width),
        nn.ReLU(),
    ]
    if cfg.stem_downsamplings >= 2:
        layers.append(nn.MaxPool2d(3, 2, 1))
    c_in = cfg.width
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        for block in range(cfg.blocks):
            layers.append(BasicBlock(c_in, c_out, 2 if stage and not block else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.num_classes)]
    return nn.Sequential(*layers)


def resnet_for_width(
    input_shape: tuple[int, ...], num_classes: int, width: int, blocks: int = 2
) -> ResNetConfig:
    """Up to 4 stages, each after the first taking one stride-2 step; the stem takes the
    rest (at most 2), so the final map is 4-7 pixels whatever the image size."""
    c, h, w = input_shape
    steps = image_downsamplings(h, w)
    stages = min(MAX_STAGES, steps + 1)
    stem = min(2, steps - (stages - 1))
    return ResNetConfig((c, h, w), num_classes, width, blocks, stages, stem)


def resnet_parameters(cfg: ResNetConfig) -> int:
    total = cfg.input_shape[0] * cfg.width * 9 + 2 * cfg.width
    c_in = cfg.width
    for stage in range(cfg.stages):
        c_out = cfg.width * 2**stage
        for block in range(cfg.blocks):
            total += c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out
            if (stage and not block) or c_in != c_out:
                total += c_in * c_out + 2 * c_out
            c_in = c_out
    return total + c_in * cfg.num_classes + cfg.num_classes
