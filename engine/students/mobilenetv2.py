"""A MobileNetV2-style student for images ``(N, C, H, W)`` of at least 16×16 (Sandler et al.
2018).

Inverted residual blocks: a 1×1 expansion to ``expansion`` × the channels (BN, ReLU6), a 3×3
depthwise conv (BN, ReLU6), a 1×1 linear projection back down (BN, no activation: the
"linear bottleneck", a ReLU there would destroy information in the narrow representation),
added to the input when the shape allows. The paper's seven stages (t, c, n, s below) after a
3×3 stem of 32 channels, then a 1×1 conv to 1280 channels, global average pool, linear head.

- Width multiplier m = ``width`` / 32: every channel count is the paper's × m, rounded, and
  at least 8 (torchvision's floor too). On 1×32×32 digits, at about 16 k parameters, a floor
  of 1 (bottlenecks of 2-4 channels) agreed with the teacher on 0.46 of the held-out images
  after 6 epochs, the floor of 8 on 0.80. The paper keeps the last 1×1 conv at 1280 below
  m = 1; here it scales too, or at student sizes that one layer would hold most of the
  parameters.
- Depth: each stage repeats its block min(n, ``depth``) times (``depth`` 4 = the paper's 17).
- Resolution: the paper's five stride-2 steps (stem, stages 2, 3, 4 and 6) are kept only as
  many as ``image_downsamplings`` asks for (32 px: 3, a 4×4 final map). Below five, the stem
  goes to stride 1 (it would discard detail before any block sees it) and the stages keep
  their stride-2 steps in order, the latest dropped: the expanded blocks then run at low
  resolution. At 28 px this cost a third of the CPU time per training step of the layout of
  the CIFAR adaptations (stem and stage 2 at stride 1, the later steps kept).

``width`` is the knob the auto sizing solves for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.students.layers import Standardize, image_downsamplings

# (expansion t, channels c, repeats n, stride s) of the paper's Table 2, t = 6 given apart.
STAGES: tuple[tuple[bool, int, int, int], ...] = (
    (False, 16, 1, 1),
    (True, 24, 2, 2),
    (True, 32, 3, 2),
    (True, 64, 4, 2),
    (True, 96, 3, 1),
    (True, 160, 3, 2),
    (True, 320, 1, 1),
)
STEM, HEAD, BASE_WIDTH = 32, 1280, 32
MIN_CHANNELS = 8
MAX_DEPTH = 4


@dataclass(frozen=True)
class MobileNetV2Config:
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    width: int = 32  # stem channels; the width multiplier is width / 32
    depth: int = MAX_DEPTH  # at most this many blocks per stage
    expansion: int = 6
    downsamplings: int = 5  # stride-2 steps kept of the paper's five


def _channels(cfg: MobileNetV2Config, c: int) -> int:
    return max(MIN_CHANNELS, (c * cfg.width + BASE_WIDTH // 2) // BASE_WIDTH)


def _strides(cfg: MobileNetV2Config) -> tuple[int, list[int]]:
    """The stem's stride and each stage's first stride (see the module's docstring)."""
    if cfg.downsamplings >= 5:
        return 2, [s for _, _, _, s in STAGES]
    left, strides = cfg.downsamplings, []
    for _, _, _, s in STAGES:
        step = s == 2 and left > 0
        strides.append(2 if step else 1)
        left -= int(step)
    return 1, strides


def _blocks(cfg: MobileNetV2Config) -> list[tuple[int, int, int, int]]:
    """(in channels, hidden channels, out channels, stride) of every inverted residual."""
    _, strides = _strides(cfg)
    out: list[tuple[int, int, int, int]] = []
    c_in = _channels(cfg, STEM)
    for (expand, c, n, _), stride in zip(STAGES, strides, strict=True):
        c_out = _channels(cfg, c)
        for i in range(min(n, cfg.depth)):
            hidden = c_in * cfg.expansion if expand else c_in
            out.append((c_in, hidden, c_out, stride if i == 0 else 1))
            c_in = c_out
    return out


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != c_in:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(c_out),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return x + out if self.residual else out


def build_mobilenetv2(cfg: MobileNetV2Config) -> nn.Module:
    channels = cfg.input_shape[0]
    stem, head = _channels(cfg, STEM), _channels(cfg, HEAD)
    stem_stride, _ = _strides(cfg)
    layers: list[nn.Module] = [
        Standardize((channels, 1, 1)),
        nn.Conv2d(channels, stem, 3, stem_stride, 1, bias=False),
        nn.BatchNorm2d(stem),
        nn.ReLU6(),
    ]
    layers += [InvertedResidual(*block) for block in _blocks(cfg)]
    c_last = _channels(cfg, STAGES[-1][1])
    layers += [
        nn.Conv2d(c_last, head, 1, bias=False),
        nn.BatchNorm2d(head),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(head, cfg.num_classes),
    ]
    return nn.Sequential(*layers)


def mobilenetv2_for_width(
    input_shape: tuple[int, ...], num_classes: int, width: int, depth: int = MAX_DEPTH
) -> MobileNetV2Config:
    c, h, w = input_shape
    return MobileNetV2Config((c, h, w), num_classes, width, depth, 6, image_downsamplings(h, w))


def mobilenetv2_parameters(cfg: MobileNetV2Config) -> int:
    stem, head = _channels(cfg, STEM), _channels(cfg, HEAD)
    total = cfg.input_shape[0] * stem * 9 + 2 * stem
    for c_in, hidden, c_out, _ in _blocks(cfg):
        if hidden != c_in:
            total += c_in * hidden + 2 * hidden
        total += hidden * 9 + 2 * hidden + hidden * c_out + 2 * c_out
    c_last = _channels(cfg, STAGES[-1][1])
    return total + c_last * head + 2 * head + head * cfg.num_classes + cfg.num_classes
