"""Token-id datasets: arrays named like the teacher's inputs, read as ``[K, L]`` samples.

An ``.npz`` holds ``input_ids`` ``[N, L]`` (required), optionally other inputs of the same
shape (``attention_mask``, ``token_type_ids``, ...) and ``label`` ``[N]``; padding is 0.
A missing ``attention_mask`` is 1 where the id is not 0 (padding; a Parquet table's ragged
rows give their own lengths instead, token_table.py), a missing
``token_type_ids`` zeros; any other input the teacher takes must be there.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.errors import ErrorCode
from engine.errors import UserError
from engine.rows import _gather
from engine.tokens import role

TOKEN_IDS_MEMBER = "input_ids.npy"
LABEL = "label"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}\.npy")
MAX_TOKEN_MEMBERS = 8


def token_members(members: dict[str, zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """A token .npz's members by array name: plain names, a few of them."""
    bad = [name for name in members if not _NAME.fullmatch(name)]
    if bad or len(members) > MAX_TOKEN_MEMBERS:
        raise UserError(
            ErrorCode.NPZ_MEMBERS,
            f"A token .npz holds at most {MAX_TOKEN_MEMBERS} arrays named like the teacher's "
            f"inputs (input_ids, attention_mask, ...) and 'label'"
            + (f"; found {sorted(bad)[:5]}." if bad else "."),
        )
    return {name.removesuffix(".npy"): member for name, member in members.items()}


def check_token_headers(headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Every input array is integer ``[N, L]`` with the shape of ``input_ids``."""
    shape = headers["input_ids"][0]
    for name, (other, dtype) in headers.items():
        if name == LABEL:
            continue
        if dtype.kind not in "iu" or len(other) != 2 or other != shape:
            raise UserError(
                ErrorCode.BAD_SHAPE,
                f"Token array {name!r} must be integers of shape {list(shape)} like input_ids "
                f"(it is {dtype.name} {list(other)}).",
            )


class TokenRows:
    """Rows ``[K, L]`` (float32, exact integers) stacked per batch from mapped arrays."""

    def __init__(
        self, arrays: list[np.ndarray | None], roles: list[str], y: np.ndarray | None
    ) -> None:
        self.arrays, self.roles, self.y = arrays, roles, y
        present = zip(arrays, roles, strict=True)
        self.ids = next(a for a, r in present if r == "ids" and a is not None)
        self._shape = (len(arrays), int(self.ids.shape[1]))

    @classmethod
    def build(
        cls,
        arrays: dict[str, np.ndarray],
        names: Sequence[str],
        row_mask: np.ndarray | None = None,
    ) -> TokenRows:
        """The arrays in the teacher's input order; defaults for a mask or segment ids.
        ``row_mask``: 1 within each row's own length, where the file says where rows end
        (a Parquet table of ragged rows); the default mask of a file that gives none."""
        ordered: list[np.ndarray | None] = []
        roles = [role(name) for name in names]
        single_ids = roles.count("ids") == 1
        for name, kind in zip(names, roles, strict=True):
            array = arrays.get(name)
            if array is None and kind == "mask":
                array = row_mask
            if array is None and kind == "ids" and single_ids:
                array = arrays["input_ids"]  # the teacher names its ids otherwise
            if array is None and kind == "ids":
                raise UserError(
                    ErrorCode.MISSING_INPUT,
                    f"The token dataset has no array {name!r}, which the teacher takes.",
                )
            ordered.append(array)
        return cls(ordered, roles, arrays.get(LABEL))

    @property
    def num_samples(self) -> int:
        return int(self.ids.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(np.int64)

    def read(self, idx: np.ndarray) -> torch.Tensor:
        ids = _gather(self.ids, idx, True).astype(np.int64)
        parts = []
        for array, kind in zip(self.arrays, self.roles, strict=True):
            if array is not None:
                parts.append(_gather(array, idx, True).astype(np.int64))
            elif kind == "mask":
                parts.append((ids != 0).astype(np.int64))
            else:
                parts.append(np.zeros_like(ids))
        # float32 holds every id below 2**24 exactly (tokens.py).
        return torch.from_numpy(np.stack(parts, axis=1).astype(np.float32))

    def labels(self, idx: np.ndarray) -> torch.Tensor | None:
        if self.y is None:
            return None
        return torch.from_numpy(_gather(self.y, idx, True).astype(np.int64))
