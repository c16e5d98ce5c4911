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

The file is a plain safetensors file, but written and read through a memory map: its header
is laid out first, each batch of logits goes straight into its rows, and a training batch
reads only its own rows back. Memory holds one batch, whatever N is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from safetensors.torch import save_file

from core.atomic import commit_file
from engine.rows import ArrayRows, Rows

PREPROCESSING_VERSION = "1"  # bump when decoding or normalisation of inputs changes
FILE_VERSION = "1"


class TeacherLike(Protocol):
    """What the engine needs from ``engine.teachers.Teacher``."""

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
    """Stored teacher logits; ``batch(idx)`` gives float32 ``[K, b, C]``.

    The tensors may be views of a memory-mapped file (``create_mapped``/``load_soft_labels``):
    a batch reads only its own rows."""

    num_classes: int
    logits: torch.Tensor | None = None  # [K, N, C] fp16
    topk_logits: torch.Tensor | None = None  # [K, N, k] fp16
    topk_indices: torch.Tensor | None = None  # [K, N, k] int64
    rest_logit: torch.Tensor | None = None  # [K, N] fp16
    mapped: Any = field(default=None, repr=False, compare=False)  # keeps the map alive

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


def _layout(k_teachers: int, n: int, c: int, keep: int | None) -> dict[str, tuple[str, list[int]]]:
    if keep is None:
        return {"logits": ("F16", [k_teachers, n, c])}
    return {
        "topk_indices": ("I64", [k_teachers, n, keep]),
        "topk_logits": ("F16", [k_teachers, n, keep]),
        "rest_logit": ("F16", [k_teachers, n]),
    }


def compute_soft_labels(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor | Rows,
    device: torch.device,
    *,
    top_k: int | None,
    batch_size: int,
    on_batch: Callable[[int, int], None] = lambda done, total: None,
    out: Path | None = None,
    metadata: dict[str, str] | None = None,
) -> SoftLabels:
    """Run every teacher once over ``x`` in large batches (inference mode, no grad).

    With ``out``, the labels are written batch by batch into a memory-mapped safetensors
    file there (``metadata`` in its header): memory holds one batch, whatever N is."""
    rows = ArrayRows.of_tensors(x) if isinstance(x, torch.Tensor) else x
    n, c, k_teachers = rows.num_samples, teachers[0].num_classes, len(teachers)
    keep = None if top_k is None or top_k >= c else top_k
    layout = _layout(k_teachers, n, c, keep)
    if out is None:
        labels = SoftLabels(
            c, **{k: torch.empty(s, dtype=_TORCH[d]) for k, (d, s) in layout.items()}
        )
    else:
        meta = {**(metadata or {}), "num_classes": str(c)}
        labels = SoftLabels(c, **create_mapped(out, layout, meta))
    total = k_teachers * n
    for k, teacher in enumerate(teachers):
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            xb = rows.read(np.arange(start, stop, dtype=np.int64))
            try:
                z = teacher_logits(teacher, xb, device).cpu()
            except torch.cuda.OutOfMemoryError:
                if batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                batch_size //= 2  # for this batch and the rest
                continue
            _store(labels, k, slice(start, stop), z, keep)
            on_batch(k * n + stop, total)
            start = stop
    return labels


def _store(labels: SoftLabels, k: int, rows: slice, z: torch.Tensor, keep: int | None) -> None:
    if keep is None:
        labels.logits[k, rows] = z.half()  # type: ignore[index]
        return
    vals, idx = z.topk(keep, dim=-1)
    rest = z.scatter(-1, idx, float("-inf")).logsumexp(-1)
    labels.topk_logits[k, rows] = vals.half()  # type: ignore[index]
    labels.topk_indices[k, rows] = idx  # type: ignore[index]
    rest = rest - torch.log(torch.tensor(float(labels.num_classes - keep)))
    labels.rest_logit[k, rows] = rest.half()  # type: ignore[index]


# --- the file: safetensors, written and read through a memory map -----------------------

_TORCH = {"F16": torch.float16, "I64": torch.int64}
_NUMPY = {"F16": np.float16, "I64": np.int64}
_MAX_HEADER = 1 << 20


def create_mapped(
    path: Path, layout: dict[str, tuple[str, list[int]]], metadata: dict[str, str]
) -> dict[str, Any]:
    """A safetensors file of the given tensors (zeros, sparse on disk), mapped for writing.

    Tensors are laid out widest dtype first so every one starts aligned."""
    order = sorted(layout, key=lambda name: (-np.dtype(_NUMPY[layout[name][0]]).itemsize, name))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        dtype, shape = layout[name]
        size = math.prod(shape) * np.dtype(_NUMPY[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(blob)) + blob)
        file.truncate(8 + len(blob) + offset)
    return _map(path, header, 8 + len(blob), offset, mode="r+")


def _map(
    path: Path, header: dict[str, Any], start: int, size: int, *, mode: Literal["r+", "c"]
) -> dict[str, Any]:
    whole = np.memmap(str(path), dtype=np.uint8, mode=mode, offset=start, shape=(max(1, size),))
    views: dict[str, Any] = {"mapped": whole}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        a, b = entry["data_offsets"]
        array = whole[a:b].view(_NUMPY[entry["dtype"]]).reshape(entry["shape"])
        views[name] = torch.from_numpy(array)
    return views


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(header, data start, data size) of a safetensors file; ValueError when malformed."""
    total = path.stat().st_size
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > min(_MAX_HEADER, total - 8):
            raise ValueError("header too long")
        header = json.loads(file.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    ends = [0]
    for name, entry in sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda item: item[1]["data_offsets"][0],
    ):
        a, b = (int(v) for v in entry["data_offsets"])
        expected = math.prod(entry["shape"]) * np.dtype(_NUMPY[entry["dtype"]]).itemsize
        if name not in FIELDS or a != ends[-1] or b - a != expected:
            raise ValueError(f"bad entry {name!r}")
        ends.append(b)
    if 8 + length + ends[-1] != total:
        raise ValueError("size mismatch")
    return header, 8 + length, ends[-1]


FIELDS = frozenset({"logits", "topk_logits", "topk_indices", "rest_logit"})


def save_soft_labels(labels: SoftLabels, path: Path, key: str) -> None:
    """Atomic: written to a temporary name, fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {"key": key, "file_version": FILE_VERSION, "num_classes": str(labels.num_classes)}
    save_file(labels.tensors(), str(tmp), metadata=meta)
    commit_file(tmp, path)


def load_soft_labels(path: Path, key: str, num_samples: int) -> SoftLabels | None:
    """The stored labels, memory-mapped, when the file exists and matches ``key``; else None."""
    if not path.exists():
        return None
    try:
        header, start, size = _read_header(path)
        meta: dict[str, Any] = header.get("__metadata__") or {}
        if meta.get("key") != key or meta.get("file_version") != FILE_VERSION:
            return None
        # Copy-on-write: torch wants a writable buffer; untouched pages stay the file's.
        labels = SoftLabels(int(meta["num_classes"]), **_map(path, header, start, size, mode="c"))
    except (OSError, KeyError, TypeError, ValueError, struct.error):
        return None
    return labels if labels.num_samples == num_samples else None


def cached_soft_labels(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor | Rows,
    device: torch.device,
    *,
    top_k: int | None,
    path: Path,
    key: str | None,
    batch_size: int,
    on_fraction: Callable[[float], None] = lambda done: None,
) -> SoftLabels:
    """The stored labels at ``path`` when they match ``key``, else computed once into it.

    Without a key nothing is reused: ``path`` is only where this job's labels are mapped."""
    n = x.num_samples if not isinstance(x, torch.Tensor) else len(x)
    if key is not None:
        stored = load_soft_labels(path, key, n)
        if stored is not None:
            on_fraction(1.0)
            return stored
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {"key": key or "", "file_version": FILE_VERSION}
    labels = compute_soft_labels(
        teachers,
        x,
        device,
        top_k=top_k,
        batch_size=batch_size,
        on_batch=lambda done, total: on_fraction(done / total),
        out=tmp,
        metadata=meta,
    )
    labels.mapped.flush()
    commit_file(tmp, path)
    return labels
