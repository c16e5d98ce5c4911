"""Soft targets: the teacher's softened distribution for each training batch.

One strategy object per ``distillation.soft_labels`` mode, all called the same way,
``targets(idx, xb) -> [b, C]`` on the training device (``idx``: rows of the training split,
``xb``: their inputs, already on the device):

- ``PrecomputedTargets``: cached logits softened once for the whole training split, when
  that fits in ``PRECOMPUTED_PROBS_BYTES``; a step is then one gather.
- ``CachedTargets``: cached logits (all of them, or top-k plus the rest's mass, which
  ``SoftLabels.batch`` fills back in) read from the mapped file and softened per batch.
- ``OnlineTargets``: every teacher runs on every batch. ``JobSpec.soft_label_mode`` picks
  it whatever ``soft_labels`` says when the batch is augmented (the teacher must answer for
  the very inputs the student sees; cached labels are for the clean ones). kd_jacobian also
  runs the teacher online, differentiably, in ``jacobian.JacobianMatching`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from engine.losses import soft_targets
from engine.soft_labels import SoftLabels, TeacherLike, teacher_logits

# The whole split's softened targets (fp32, N × C) are kept when they fit in this many
# bytes; beyond, memory would grow with N, so they are softened per batch instead.
PRECOMPUTED_PROBS_BYTES = 256 << 20
PRECOMPUTE_CHUNK_BYTES = 64 << 20  # K × rows × C fp32 temporaries per precompute chunk


class SoftTargets(Protocol):
    def __call__(self, idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PrecomputedTargets:
    probs: torch.Tensor  # [N_train, C] on the device

    def __call__(self, idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return self.probs[idx.to(self.probs.device)]


@dataclass
class CachedTargets:
    labels: SoftLabels
    index: torch.Tensor  # training row -> row of the transfer set (and of the labels)
    temperature: float
    device: torch.device

    def __call__(self, idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        logits = self.labels.batch(self.index[idx.cpu()]).to(self.device, non_blocking=True)
        return soft_targets(logits, self.temperature)


@dataclass
class OnlineTargets:
    teachers: Sequence[TeacherLike]
    temperature: float
    device: torch.device

    def __call__(self, idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        logits = torch.stack(
            [teacher_logits(t, xb, self.device, online=True) for t in self.teachers]
        )
        return soft_targets(logits, self.temperature)


def make_targets(
    soft: SoftLabels | None,
    *,
    teachers: Sequence[TeacherLike],
    index: torch.Tensor,
    temperature: float,
    device: torch.device,
) -> SoftTargets:
    """The strategy for these labels: online without stored labels, else cached (softened
    once up front when the split is small enough)."""
    if soft is None:
        return OnlineTargets(teachers, temperature, device)
    cached = CachedTargets(soft, index, temperature, device)
    classes = soft.num_classes
    if len(index) * classes * 4 > PRECOMPUTED_PROBS_BYTES:
        return cached
    chunk = max(1, PRECOMPUTE_CHUNK_BYTES // (len(teachers) * classes * 4))
    rows = torch.arange(len(index))
    probs = torch.cat(
        [cached(rows[i : i + chunk], torch.empty(0)) for i in range(0, len(index), chunk)]
    )
    return PrecomputedTargets(probs.to(device))
