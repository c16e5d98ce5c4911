"""The held-out split used when a job has no eval set.

The rule is simple enough to reproduce outside (numpy only), and the report carries it:

    perm = numpy.random.default_rng(seed).permutation(N)
    n_eval = max(1, round(fraction * N))
    eval = sorted(perm[:n_eval]);  train = sorted(perm[n_eval:])

``indices_sha256`` is the sha256 of the eval indices as little-endian int64 bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import ErrorCode
from engine.errors import UserError


@dataclass(frozen=True)
class Split:
    train: torch.Tensor  # int64 indices into the transfer set, ascending
    eval: torch.Tensor
    seed: int
    fraction: float

    def describe(self, include_indices_up_to: int = 5000) -> dict[str, Any]:
        eval_idx = self.eval.numpy().astype("<i8")
        out: dict[str, Any] = {
            "rule": "numpy.random.default_rng(seed).permutation(N); the first "
            "max(1, round(fraction*N)) indices, sorted, are held out",
            "seed": self.seed,
            "fraction": self.fraction,
            "num_samples": int(len(self.train) + len(self.eval)),
            "eval_samples": int(len(self.eval)),
            "indices_sha256": hashlib.sha256(eval_idx.tobytes()).hexdigest(),
        }
        if len(eval_idx) <= include_indices_up_to:
            out["eval_indices"] = eval_idx.tolist()
        return out


def held_out_split(num_samples: int, fraction: float, seed: int) -> Split:
    n_eval = max(1, round(fraction * num_samples))
    if num_samples - n_eval < 1:
        raise UserError(
            ErrorCode.DATASET_TOO_SMALL,
            f"dataset: {num_samples} samples cannot be split into training and evaluation",
        )
    perm = np.random.default_rng(seed).permutation(num_samples)
    eval_idx = np.sort(perm[:n_eval])
    train_idx = np.sort(perm[n_eval:])
    return Split(torch.from_numpy(train_idx), torch.from_numpy(eval_idx), seed, fraction)
