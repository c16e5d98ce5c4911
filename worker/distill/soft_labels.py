"""The teacher's soft labels: run once over the transfer set, stored, reused.

The file holds the teachers' scores, not probabilities: their logits, or ``log p`` for a
teacher whose output is probabilities (``teacher_outputs.py``), which the temperature then
softens as if they were logits. The temperature is applied at training time
(``losses.soft_targets``), so a second job with another T, student or seed reuses it.
Storage is fp16 (measured on MNIST: no loss against fp32). With ``top_k`` set, only each
sample's k largest logits are kept, plus one ``rest_logit`` per sample:

    rest_logit = log( (1/(C−k)) Σ_{j ∉ top-k} exp(t_j) )

Filling every other class with it restores, at T = 1, the exact top-k probabilities and the
exact remaining mass (spread evenly); at other temperatures it is the usual top-k
approximation. An ensemble stores one slice per teacher, ``[K, N, ·]``, because the target
is the mean of the teachers' *softened* probabilities, which depends on T.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PREPROCESSING_VERSION = "1"  # bump when decoding or normalisation of inputs changes
FILE_VERSION = "1"


class TeacherLike(Protocol):
    """What the engine needs from ``worker.distill.teachers.Teacher``."""

    format: str
    num_classes: int
    parameters: int | None
    input_shape: list[int | None]
    module: torch.nn.Module | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def teacher_logits(
    teacher: TeacherLike, x: torch.Tensor, device: torch.device, *, online: bool = False
) -> torch.Tensor:
    """float32 scores ``[N, C]`` on ``device``: logits, or log-probabilities for teachers
    that output probabilities (softmax of either is the teacher's distribution).

    ONNX teachers run in ONNX Runtime on host tensors. Torch teachers run through the
    guarded loader's ``__call__``; in ``online`` mode the loaded module is called directly
    (one call per training step, no wrapper overhead) unless the teacher was exported with
    a fixed batch size, which only ``__call__`` knows how to pad.
    """
    with torch.inference_mode():
        if teacher.format == "onnx":
            out = teacher(x.cpu())
        elif (
            online and teacher.module is not None and getattr(teacher, "static_batch", None) is None
        ):
            out = teacher.module(x.to(device))
        else:
            out = teacher(x.to(device))
    return out.float().to(device)


def cache_key(
    teacher_sha256s: Sequence[str],
    dataset_sha256: str,
    *,
    sample_shape: Sequence[int],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    top_k: int | None,
) -> str:
    """sha256 over everything that decides the stored logits. Teacher order is kept:
    slice k of the file belongs to teacher k."""
    blob = json.dumps(
        {
            "teachers": list(teacher_sha256s),
            "dataset": dataset_sha256,
            "preprocessing_version": PREPROCESSING_VERSION,
            "sample_shape": [int(s) for s in sample_shape],
            "mean": None if mean is None else [float(m) for m in mean],
            "std": None if std is None else [float(s) for s in std],
            "top_k": top_k,
            "file_version": FILE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class SoftLabels:
    """Stored teacher logits; ``batch(idx)`` gives float32 ``[K, b, C]``."""

    num_classes: int
    logits: torch.Tensor | None = None  # [K, N, C] fp16
    topk_logits: torch.Tensor | None = None  # [K, N, k] fp16
    topk_indices: torch.Tensor | None = None  # [K, N, k] int64
    rest_logit: torch.Tensor | None = None  # [K, N] fp16

    @property
    def num_samples(self) -> int:
        ref = self.logits if self.logits is not None else self.topk_logits
        assert ref is not None
        return int(ref.shape[1])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if self.logits is not None:
            return self.logits[:, idx].float()
        assert self.topk_logits is not None and self.topk_indices is not None
        assert self.rest_logit is not None
        rest = self.rest_logit[:, idx].float().unsqueeze(-1)
        full = rest.expand(-1, -1, self.num_classes).clone()
        return full.scatter_(-1, self.topk_indices[:, idx], self.topk_logits[:, idx].float())

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {
            "logits": self.logits,
            "topk_logits": self.topk_logits,
            "topk_indices": self.topk_indices,
            "rest_logit": self.rest_logit,
        }
        return {k: v.contiguous() for k, v in named.items() if v is not None}


def compute_soft_labels(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor,
    device: torch.device,
    *,
    top_k: int | None,
    batch_size: int,
    on_batch: Callable[[int, int], None] = lambda done, total: None,
) -> SoftLabels:
    """Run every teacher once over ``x`` in large batches (inference mode, no grad)."""
    n, c, k_teachers = len(x), teachers[0].num_classes, len(teachers)
    keep = None if top_k is None or top_k >= c else top_k
    out = SoftLabels(num_classes=c)
    if keep is None:
        out.logits = torch.empty(k_teachers, n, c, dtype=torch.float16)
    else:
        out.topk_logits = torch.empty(k_teachers, n, keep, dtype=torch.float16)
        out.topk_indices = torch.empty(k_teachers, n, keep, dtype=torch.int64)
        out.rest_logit = torch.empty(k_teachers, n, dtype=torch.float16)
    total = k_teachers * n
    for k, teacher in enumerate(teachers):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            z = teacher_logits(teacher, x[start:stop], device).cpu()
            if keep is None:
                out.logits[k, start:stop] = z.half()  # type: ignore[index]
            else:
                vals, idx = z.topk(keep, dim=-1)
                rest = z.scatter(-1, idx, float("-inf")).logsumexp(-1)
                out.topk_logits[k, start:stop] = vals.half()  # type: ignore[index]
                out.topk_indices[k, start:stop] = idx  # type: ignore[index]
                out.rest_logit[k, start:stop] = (  # type: ignore[index]
                    rest - torch.log(torch.tensor(float(c - keep)))
                ).half()
            on_batch(k * n + stop, total)
    return out


def save_soft_labels(labels: SoftLabels, path: Path, key: str) -> None:
    """Atomic: written to a temporary name, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {"key": key, "file_version": FILE_VERSION, "num_classes": str(labels.num_classes)}
    save_file(labels.tensors(), str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_soft_labels(path: Path, key: str, num_samples: int) -> SoftLabels | None:
    """The stored labels when the file exists and matches ``key``; else None."""
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta: dict[str, Any] = f.metadata() or {}
        if meta.get("key") != key or meta.get("file_version") != FILE_VERSION:
            return None
        labels = SoftLabels(num_classes=int(meta["num_classes"]), **load_file(str(path)))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return None
    return labels if labels.num_samples == num_samples else None


def soft_labels_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"soft-labels-{key}.safetensors"


def cached_soft_labels(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor,
    device: torch.device,
    *,
    top_k: int | None,
    cache_dir: Path | None,
    key: str | None,
    batch_size: int,
    on_fraction: Callable[[float], None] = lambda done: None,
) -> SoftLabels:
    """The stored labels for ``key`` when present, else computed once and stored."""
    path = None if cache_dir is None or key is None else soft_labels_path(cache_dir, key)
    if path is not None and key is not None:
        stored = load_soft_labels(path, key, len(x))
        if stored is not None:
            on_fraction(1.0)
            return stored
    labels = compute_soft_labels(
        teachers,
        x,
        device,
        top_k=top_k,
        batch_size=batch_size,
        on_batch=lambda done, total: on_fraction(done / total),
    )
    if path is not None and key is not None:
        save_soft_labels(labels, path, key)
    return labels
