"""A dataset as rows read by index: the engine never holds a whole transfer set.

Every stage reads samples through ``Rows.read(idx)``: a float32 batch ``[b, *sample_shape]``,
already reshaped to the teacher's shape and normalised. Behind it the samples stay where
they are, in their own dtype: a memory-mapped ``.npy`` (uint8 stays uint8 on disk and in
the page cache), an in-memory array a caller passed, or an image zip decoded per batch.
The cast to float32 happens on the batch alone, so memory is O(batch), not O(N).

Reads from a memory map go through sorted indices (pages in file order, each touched once)
and are put back in the asked order afterwards: the batch is the same, bytes included, as
indexing a whole in-memory tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.errors import ErrorCode
from engine.errors import UserError

CHUNK_BYTES = 32 << 20  # rows per sequential pass: about this many bytes of float32 input


class Rows(Protocol):
    """Samples fetched by index; labels (int64) when the dataset has them."""

    @property
    def num_samples(self) -> int: ...

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    @property
    def has_labels(self) -> bool: ...

    @property
    def raw_dtype(self) -> np.dtype: ...

    def read(self, idx: np.ndarray) -> torch.Tensor: ...

    def labels(self, idx: np.ndarray) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class Normalise:
    """``(x - mean) / std`` per channel (dimension 1 of a batch), or one value for all."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def build(
        cls, mean: Sequence[float] | None, std: Sequence[float] | None, shape: Sequence[int]
    ) -> Normalise | None:
        if mean is None and std is None:
            return None
        mean, std = mean or [0.0], std or [1.0]
        channels = shape[0] if shape else 1
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise UserError(
                    ErrorCode.BAD_PREPROCESSING, f"{name} needs 1 or {channels} values."
                )
        if any(value == 0 for value in std):
            raise UserError(ErrorCode.BAD_PREPROCESSING, "std values must be non-zero.")
        view = [-1, *([1] * (len(shape) - 1))] if shape else [-1]
        mean_t = torch.tensor(list(mean), dtype=torch.float32).reshape(view)
        std_t = torch.tensor(list(std), dtype=torch.float32).reshape(view)
        return cls(mean_t, std_t)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def target_shape(stored: Sequence[int], sample_shape: Sequence[int] | None) -> tuple[int, ...]:
    """``sample_shape`` when the stored samples hold as many numbers (64 features feed a
    1×8×8 teacher), else the stored shape; a count mismatch is a user error."""
    stored = tuple(int(d) for d in stored)
    if sample_shape is None:
        return stored
    target = tuple(int(d) for d in sample_shape)
    if target != stored and math.prod(target) != math.prod(stored):
        raise UserError(
            ErrorCode.SHAPE_MISMATCH,
            f"Samples of shape {list(stored)} cannot feed a teacher expecting {list(target)}.",
        )
    return target


class ArrayRows:
    """Rows of a numpy array (memory-mapped or not) with optional int labels."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        sample_shape: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.x, self.y = x, y
        self._shape = target_shape(x.shape[1:], sample_shape)
        self._normalise = Normalise.build(mean, std, self._shape)
        self._mapped = isinstance(x, np.memmap)

    @classmethod
    def of_tensors(cls, x: torch.Tensor, y: torch.Tensor | None = None) -> ArrayRows:
        """In-memory tensors as rows, sharing their memory (tests, benchmarks)."""
        return cls(x.detach().cpu().numpy(), None if y is None else y.detach().cpu().numpy())

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def raw_dtype(self) -> np.dtype:
        return self.x.dtype

    def read(self, idx: np.ndarray) -> torch.Tensor:
        block = _gather(self.x, idx, self._mapped)
        if block.dtype != np.float32 or not block.dtype.isnative:
            block = block.astype(np.float32)
        x = torch.from_numpy(block).reshape(len(block), *self._shape)
        return x if self._normalise is None else self._normalise(x)

    def labels(self, idx: np.ndarray) -> torch.Tensor | None:
        if self.y is None:
            return None
        return torch.from_numpy(_gather(self.y, idx, self._mapped).astype(np.int64))


class SubsetRows:
    """Some rows of another ``Rows``, by ascending index (a held-out split)."""

    def __init__(self, base: Rows, index: np.ndarray) -> None:
        self.base, self.index = base, index

    @property
    def num_samples(self) -> int:
        return len(self.index)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.base.sample_shape

    @property
    def has_labels(self) -> bool:
        return self.base.has_labels

    @property
    def raw_dtype(self) -> np.dtype:
        return self.base.raw_dtype

    def read(self, idx: np.ndarray) -> torch.Tensor:
        return self.base.read(self.index[idx])

    def labels(self, idx: np.ndarray) -> torch.Tensor | None:
        return self.base.labels(self.index[idx])


def _gather(array: np.ndarray, idx: np.ndarray, mapped: bool) -> np.ndarray:
    """``array[idx]`` as a plain in-memory array. From a map: a slice when the indices are
    one run, else sorted indices (file order), put back in the asked order."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and _ascending(idx):
        return np.array(array[int(idx[0]) : int(idx[-1]) + 1])
    if not mapped or _ascending(idx):
        return np.asarray(array[idx])
    order = np.argsort(idx, kind="stable")
    block = np.asarray(array[idx[order]])
    out = np.empty_like(block)
    out[order] = block
    return out


def _ascending(idx: np.ndarray) -> bool:
    return len(idx) < 2 or bool((idx[1:] >= idx[:-1]).all())


def row_chunks(rows: Rows, chunk_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, batch) over every row in order, about ``CHUNK_BYTES`` of float32 at a time."""
    n = rows.num_samples
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // (4 * max(1, math.prod(rows.sample_shape))))
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        yield start, rows.read(np.arange(start, stop, dtype=np.int64))


def read_all(rows: Rows) -> torch.Tensor:
    """Every row as one tensor: only for sets known to be small (tests, progress subsets)."""
    return rows.read(np.arange(rows.num_samples, dtype=np.int64))


class TensorRows:
    """Rows already in memory as one float32 tensor (small sets; on the GPU when it fits)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self.x, self.y = x, y

    @classmethod
    def of(cls, rows: Rows) -> TensorRows:
        everything = np.arange(rows.num_samples, dtype=np.int64)
        return cls(rows.read(everything), rows.labels(everything))

    @property
    def num_samples(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.x.nbytes

    def to(self, device: torch.device) -> TensorRows:
        return TensorRows(self.x.to(device), None if self.y is None else self.y.to(device))

    def read(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.x[torch.as_tensor(idx).to(self.x.device)]

    def labels(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor | None:
        return None if self.y is None else self.y[torch.as_tensor(idx).to(self.y.device)]


def float_bytes(rows: Rows) -> int:
    """What the rows weigh as float32."""
    return 4 * rows.num_samples * math.prod(rows.sample_shape)


def in_memory_if_small(rows: Rows, limit: int) -> Rows:
    """Rows under ``limit`` bytes of float32 are read once into memory (per-batch reads of
    a small set cost more than the copy); bigger ones stay where they are."""
    if isinstance(rows, TensorRows) or float_bytes(rows) > limit:
        return rows
    return TensorRows.of(rows)
