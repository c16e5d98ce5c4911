"""Augmentation of the student's training batches (``JobSpec.augmentation``).

Each batch gets, in this order: a random shift of each image by up to ``shift`` pixels in
each direction (edges replicated, so a normalised background stays background), a
horizontal flip of each image with probability 1/2 (``flip``), mixup of the batch with a
permutation of itself, ``x = λ·x + (1 − λ)·x[perm]`` with one λ ~ Beta(a, a) per batch
(``mixup`` = a; Zhang et al. 2018), and Gaussian noise of standard deviation ``noise``, in
the units the model sees (after preprocessing). Last, MUNGE (``munge`` = p; Bucilă, Caruana
and Niculescu-Mizil, Model Compression, KDD 2006) appends one synthetic row per row of a
tabular batch: row i's nearest neighbour j within the batch (Euclidean, model units), then
for each attribute a, with probability p, ``x'_ia = x_ja + N(0, |x_ia − x_ja| / s)``
(``munge_scale`` = s), else ``x'_ia = x_ia``. The paper draws a large synthetic set once from
the whole transfer set; here the neighbours are the batch's, so a batch needs no state.
Synthetic rows have no labels: the labels (if any) stay those of the first half, the
originals, and only those rows enter the hard-label term.

Every draw comes from a NumPy generator seeded with (seed, epoch, batch): a batch's
augmentation needs no state, so a resumed run sees exactly the batches an uninterrupted one
would, and produces the same bytes. The teacher then runs on this very batch ("function
matching", Beyer et al. 2022): soft labels cached on clean inputs would be the teacher's
answer to another question.

With mixup and labels, the hard labels become the same mixture of one-hot vectors,
``λ·onehot(y) + (1 − λ)·onehot(y[perm])``: cross-entropy against it equals
``λ·CE(y) + (1 − λ)·CE(y[perm])``, the mixup loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ErrorCode
from core.spec import AugmentationSpec
from engine.errors import UserError

_STREAM = 0x41_75_67  # keeps these draws apart from any other stream seeded by (seed, epoch)


def batch_rng(seed: int, epoch: int, batch: int, stream: int = _STREAM) -> np.random.Generator:
    """The generator of one batch's draws: a pure function of its arguments."""
    return np.random.default_rng([stream, seed, epoch, batch])


@dataclass(frozen=True)
class Augment:
    spec: AugmentationSpec
    seed: int
    num_classes: int

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor | None, *, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The augmented batch and its labels (class indices, or mixed one-hot rows)."""
        rng = batch_rng(self.seed, epoch, batch)
        spec, n = self.spec, len(x)
        if spec.shift:
            x = shift_images(x, _on(rng.integers(-spec.shift, spec.shift + 1, (n, 2)), x))
        if spec.flip:
            x = flip_images(x, _on(rng.random(n) < 0.5, x))
        if spec.mixup:
            lam = float(rng.beta(spec.mixup, spec.mixup))
            perm = _on(rng.permutation(n), x)
            x = lam * x + (1.0 - lam) * x[perm]
            if labels is not None:
                onehot = F.one_hot(labels.long(), self.num_classes).to(x.dtype)
                labels = lam * onehot + (1.0 - lam) * onehot[perm]
        if spec.noise:
            noise = rng.standard_normal(tuple(x.shape), dtype=np.float32)
            x = x + spec.noise * _on(noise, x).to(x.dtype)
        if spec.munge:
            swap = rng.random(tuple(x.shape)) < spec.munge
            noise = rng.standard_normal(tuple(x.shape), dtype=np.float32)
            x = torch.cat([x, munge(x, _on(swap, x), _on(noise, x).to(x.dtype), spec.munge_scale)])
        return x, labels


def _on(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device)


def shift_images(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Moves image i by ``shifts[i] = (dy, dx)`` pixels; ``x`` is [N, H, W] or [N, C, H, W].
    Pixels shifted in from outside repeat the nearest edge."""
    flat = x.dim() == 3
    images = x.unsqueeze(1) if flat else x
    n, _, h, w = images.shape
    s = int(shifts.abs().max()) if len(shifts) else 0
    if s == 0:
        return x
    padded = F.pad(images, (s, s, s, s), mode="replicate")
    rows = (s - shifts[:, 0, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (s - shifts[:, 1, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=x.device).view(1, -1, 1, 1)
    out = padded[batch, channel, rows, cols]
    return out.squeeze(1) if flat else out


def flip_images(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirrors the images picked by the boolean ``which`` left to right (last axis)."""
    mask = which.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.flip(-1), x)


def nearest_neighbours(x: torch.Tensor) -> torch.Tensor:
    """For each row of ``x`` [N, D], the index of its nearest other row (Euclidean; the
    lowest index on ties). Exact differences, not the ‖a‖² − 2ab + ‖b‖² shortcut, whose
    rounding can misorder near neighbours."""
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    distances.fill_diagonal_(float("inf"))
    return distances.argmin(dim=1)


def munge(x: torch.Tensor, swap: torch.Tensor, noise: torch.Tensor, scale: float) -> torch.Tensor:
    """MUNGE's synthetic rows for a batch ``x`` [N, D] (N ≥ 2): where ``swap`` [N, D] holds,
    the nearest neighbour's value plus ``noise · |x − x_nn| / scale`` (``noise`` standard
    normal); elsewhere the row's own value."""
    neighbour = x[nearest_neighbours(x)]
    moved = neighbour + noise * (x - neighbour).abs() / scale
    return torch.where(swap, moved, x)


def make_augment(
    spec: AugmentationSpec, sample_shape: tuple[int, ...] | list[int], seed: int, classes: int
) -> Augment | None:
    """None when nothing is asked. Shifts and flips need images: samples [H, W] or
    [C, H, W] (a flat vector has no known 2-D layout); MUNGE needs tabular samples [D]
    (attributes to swap one by one)."""
    if not spec.active:
        return None
    if spec.munge and len(sample_shape) != 1:
        raise UserError(
            ErrorCode.BAD_SPEC,
            f"augmentation.munge: needs tabular samples ([D] vectors); samples have shape "
            f"{list(sample_shape)}",
        )
    for name, asked in (("shift", spec.shift), ("flip", spec.flip)):
        if asked and len(sample_shape) not in (2, 3):
            raise UserError(
                ErrorCode.BAD_SPEC,
                f"augmentation.{name}: needs images ([H, W] or [C, H, W] samples); "
                f"samples have shape {list(sample_shape)}",
            )
    if spec.shift and spec.shift >= min(sample_shape[-2:]):
        raise UserError(
            ErrorCode.BAD_SPEC,
            f"augmentation.shift: {spec.shift} pixels is not below the image size "
            f"{list(sample_shape[-2:])}",
        )
    return Augment(spec, seed, classes)
