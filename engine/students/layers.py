"""Building blocks shared by the students."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

FIT_CHUNK_ELEMENTS = 1 << 22  # elements per float64 chunk in ``Standardize.fit`` (32 MiB)


class Standardize(nn.Module):
    """``(x - mean) * inv_std`` with fixed statistics stored as buffers.

    The statistics come from the transfer set (``fit``) and travel inside the student's
    weights, so the exported file takes the same raw inputs as the teacher: nobody has to
    know how the student was normalised. ``stat_shape`` broadcasts against one sample,
    e.g. ``(D,)`` for vectors or ``(C, 1, 1)`` for images.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, stat_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("inv_std", torch.ones(stat_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std

    @torch.no_grad()
    def fit(self, x: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Set the statistics from samples: a tensor ``(N, *sample_shape)`` or chunks of one.

        Reduces over every axis where ``stat_shape`` has size 1 (and the batch axis), in
        float64 so a large N does not lose digits, in one pass: each chunk's count, mean and
        sum of squared deviations, merged by Chan et al.'s pairwise update (as stable as two
        passes, and the data is read once: a transfer set bigger than memory streams through).
        A feature that barely varies gets its std floored at 10 % of the mean std: dividing
        a constant pixel by ~0 would turn the smallest change at test time into a huge
        activation.
        """
        if isinstance(x, torch.Tensor):
            rows = max(1, FIT_CHUNK_ELEMENTS // max(1, x[0].numel()))
            x = torch.split(x, rows)
        stat_shape = tuple(self.mean.shape)
        count, mean, m2 = 0, torch.zeros(()), torch.zeros(())
        for chunk in x:
            if count == 0:
                sample_shape = chunk.shape[1:]
                dims = [0] + [
                    i + 1 for i, s in enumerate(stat_shape) if s == 1 and sample_shape[i] != 1
                ]
            c = chunk.double()
            n = c.numel() // math.prod(stat_shape)
            chunk_mean = c.mean(dim=dims, keepdim=True)
            chunk_m2 = (c - chunk_mean).square().sum(dim=dims, keepdim=True)
            delta = chunk_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta.square() * (count * n / total)
            count = total
        std = (m2 / count).sqrt()[0]
        floor = max(0.1 * float(std.mean()), 1e-6)
        self.mean.copy_(mean[0].reshape(stat_shape).float())
        self.inv_std.copy_((1.0 / std.clamp_min(floor)).reshape(stat_shape).float())


MAX_DOWNSAMPLINGS = 5  # 224 px → 7×7, as in ResNet and MobileNetV2 on ImageNet


def image_downsamplings(height: int, width: int) -> int:
    """Stride-2 steps that bring the smaller side down to 4-7 pixels, between 1 and 5.

    224 px: 5 (a 7×7 final map, the ImageNet layout); 32 px: 3 (4×4, as the CIFAR variants
    end); 28 px: 2 (7×7). Fewer steps would pool a larger map into one vector at the head;
    more would leave the last stages a map of 1-3 pixels, where a 3×3 conv sees mostly padding.
    """
    side, steps = min(height, width), 0
    while steps < MAX_DOWNSAMPLINGS and side >= 4 * 2 ** (steps + 1):
        steps += 1
    return max(1, steps)
