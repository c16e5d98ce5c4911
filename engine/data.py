"""Open an uploaded dataset behind the guards as rows: never pickles, never all of it at once.

- ``.npy``: the header is checked against the file size (a lying header cannot make us
  allocate), then the file is memory-mapped read-only and keeps its dtype: uint8 stays
  uint8, on disk and in memory, until a batch is cast.
- ``.npz``: each member's declared size is checked against the caps and the compression
  ratio (``guard.check_zip``) and its header's shape against that inflated size before
  anything is allocated; then the members are extracted once into the job's scratch folder
  and mapped.
- CSV and Parquet: read in blocks (``tables.py``), written once as raw arrays and mapped.
- Image zips: decoded per batch (``images.py``).

``open_dataset`` gives ``Rows`` (``rows.py``); ``load_dataset`` reads them whole, for small
sets and tests.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.contracts import EngineLimits
from core.errors import ErrorCode
from engine.errors import UserError
from engine.guard import ArchiveLimits, check_zip
from engine.images import ImageZipRows, scan_images
from engine.rows import ArrayRows, Rows, read_all
from engine.tables import check_labels, map_table, scan_table
from engine.token_data import (
    TOKEN_IDS_MEMBER,
    TokenRows,
    check_token_headers,
    token_members,
)
from engine.token_table import describe_token_table, is_token_table, token_table_rows

DATASET_FORMATS = ("npy", "npz", "csv", "parquet", "image_zip", "jsonl")
LABEL_CHUNK = 1 << 20  # labels checked this many at a time
NPZ_MEMBERS = ("x", "y")


_DEFAULTS = EngineLimits()


@dataclass(frozen=True)
class DataLimits:
    """Caps on what a dataset may unpack to: the request's ``EngineLimits`` (the host's
    settings); these defaults are theirs."""

    max_entries: int = _DEFAULTS.max_archive_entries
    max_unpacked_bytes: int = _DEFAULTS.max_unpacked_bytes
    # Per image; PIL's own bomb check is far looser.
    max_image_pixels: int = _DEFAULTS.max_image_pixels
    # An archive member over 1 MiB may inflate at most this many times its stored size.
    max_compression_ratio: int = _DEFAULTS.max_compression_ratio

    @classmethod
    def of(cls, limits: EngineLimits) -> DataLimits:
        """The operator's caps, as the host sent them."""
        return cls(
            max_entries=limits.max_archive_entries,
            max_unpacked_bytes=limits.max_unpacked_bytes,
            max_image_pixels=limits.max_image_pixels,
            max_compression_ratio=limits.max_compression_ratio,
        )

    def archive(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_entries=self.max_entries,
            max_total_bytes=self.max_unpacked_bytes,
            max_ratio=self.max_compression_ratio,
        )


@dataclass
class ArrayData:
    x: torch.Tensor  # float32 [N, ...]
    y: torch.Tensor | None  # int64 [N]


def inspect_dataset(
    path: str | Path, fmt: str, *, limits: DataLimits | None = None
) -> dict[str, Any]:
    """Describe the dataset: num_samples, sample_shape, dtype, has_labels, num_classes.

    Reads headers and labels only (CSV and Parquet: one pass over the blocks)."""
    limits, path = limits or DataLimits(), Path(path)
    if fmt == "image_zip":
        scan = scan_images(path, limits)
        height, width = scan.size
        has_labels = scan.labels is not None
        return _description(
            len(scan.members),
            [1 if scan.mode == "L" else 3, height, width],
            "uint8",
            has_labels,
            len(scan.classes) if has_labels else None,
        )
    if fmt == "jsonl":
        from engine.text_data import describe_text

        return describe_text(path, fmt)
    if fmt in ("csv", "parquet"):
        described = _describe_text_or_tokens(path, fmt)
        if described is not None:
            return described
        table = scan_table(path, fmt)
        classes = None if table.label_max is None else table.label_max + 1
        return _description(table.num_rows, [table.features], "float32", table.has_labels, classes)
    if fmt == "npy":
        x = map_npy(path, "The .npy file")
        return _description(len(x), list(x.shape[1:]), x.dtype.name, False, None)
    if fmt == "npz":
        headers = _npz_headers(path, limits)
        if "input_ids" in headers:
            (shape, dtype), has_labels = headers["input_ids"], "label" in headers
            classes = _npz_num_classes(path, headers["label"], "label.npy") if has_labels else None
            info = _description(shape[0], list(shape[1:]), dtype.name, has_labels, classes)
            return {**info, "kind": "tokens", "inputs": sorted(set(headers) - {"label"})}
        (shape, dtype), has_labels = headers["x"], "y" in headers
        classes = _npz_num_classes(path, headers["y"]) if has_labels else None
        return _description(shape[0], list(shape[1:]), dtype.name, has_labels, classes)
    raise UserError(ErrorCode.UNSUPPORTED_FORMAT, f"Datasets must be one of {DATASET_FORMATS}.")


def _describe_text_or_tokens(path: Path, fmt: str) -> dict[str, Any] | None:
    """A CSV / Parquet table with a ``text`` column is text; a Parquet file with an
    ``input_ids`` column token ids; None for a numeric table."""
    from engine.text_data import describe_text, table_columns

    columns = table_columns(path, fmt)
    if "text" in columns:
        return describe_text(path, fmt)
    if fmt == "parquet" and is_token_table(columns):
        return describe_token_table(path)
    return None


def _description(
    n: int, shape: list[int], dtype: str, has_labels: bool, num_classes: int | None
) -> dict[str, Any]:
    return {
        "num_samples": int(n),
        "sample_shape": [int(dim) for dim in shape],
        "dtype": dtype,
        "has_labels": has_labels,
        "num_classes": num_classes,
    }


def open_dataset(
    path: str | Path,
    fmt: str,
    *,
    scratch: Path,
    sample_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limits: DataLimits | None = None,
    token_inputs: Sequence[str] | None = None,
) -> Rows:
    """The dataset as rows: float32 batches in ``sample_shape`` (when it holds as many
    numbers per sample), normalised by ``mean``/``std`` per channel. ``scratch`` is a
    folder of this job where archives and tables are unpacked once (reused on resume).
    ``token_inputs``: the teacher's token input names, for token datasets (``tokens.py``)."""
    limits, path = limits or DataLimits(), Path(path)
    prep: dict[str, Any] = {"sample_shape": sample_shape, "mean": mean, "std": std}
    if fmt == "image_zip":
        return ImageZipRows(path, limits, **prep)
    if fmt == "npy":
        return ArrayRows(map_npy(path, "The .npy file"), None, **prep)
    if fmt == "npz" and token_inputs is not None:
        headers = _npz_headers(path, limits)
        if "input_ids" not in headers:
            raise UserError(
                ErrorCode.MISSING_INPUT,
                "The teacher takes token inputs: the .npz dataset needs an 'input_ids' array.",
            )
        arrays = _extract_members(path, scratch, headers)
        return TokenRows.build(arrays, token_inputs)
    if fmt == "npz":
        x, y = _extract_npz(path, scratch, limits)
        return ArrayRows(x, y, **prep)
    if fmt == "parquet" and token_inputs is not None:
        from engine.text_data import table_columns

        if not is_token_table(table_columns(path, fmt)):
            raise UserError(
                ErrorCode.MISSING_INPUT,
                "The teacher takes token inputs: the Parquet dataset needs an 'input_ids' "
                "column of token lists (or a 'text' column, tokenized with its tokenizer).",
            )
        return token_table_rows(path, token_inputs, scratch)
    if fmt in ("csv", "parquet"):
        mapped = map_table(scratch)
        if mapped is None:
            scan_table(path, fmt, scratch)
            mapped = map_table(scratch)
        assert mapped is not None
        return ArrayRows(*mapped, **prep)
    raise UserError(ErrorCode.UNSUPPORTED_FORMAT, f"Datasets must be one of {DATASET_FORMATS}.")


def load_dataset(
    path: str | Path,
    fmt: str,
    *,
    sample_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limits: DataLimits | None = None,
) -> ArrayData:
    """The whole dataset as tensors: x float32 [N, ...], y int64 [N] or None (small sets)."""
    with tempfile.TemporaryDirectory(prefix="stillhouse-data-") as scratch:
        rows = open_dataset(
            path,
            fmt,
            scratch=Path(scratch),
            sample_shape=sample_shape,
            mean=mean,
            std=std,
            limits=limits,
        )
        everything = np.arange(rows.num_samples, dtype=np.int64)
        return ArrayData(x=read_all(rows), y=rows.labels(everything))


# --- arrays -------------------------------------------------------------------------------


def read_npy_header(
    file: IO[bytes], stored_bytes: int, what: str
) -> tuple[tuple[int, ...], np.dtype]:
    """Parse an .npy header and prove the data that follows has exactly the declared size."""
    try:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UserError(ErrorCode.BAD_HEADER, f"{what} has an unreadable .npy header.") from exc
    if dtype.hasobject:
        raise UserError(
            ErrorCode.OBJECT_ARRAY, f"{what} holds Python objects; save a numeric array instead."
        )
    if dtype.fields is not None or dtype.subdtype is not None:
        raise UserError(
            ErrorCode.STRUCTURED_ARRAY, f"{what} is a structured array; save plain numbers."
        )
    if dtype.kind not in "biuf":
        raise UserError(ErrorCode.UNSUPPORTED_DTYPE, f"{what} has dtype {dtype}; numbers only.")
    if not shape or shape[0] < 1:
        raise UserError(
            ErrorCode.BAD_SHAPE, f"{what} must be an array of shape [N, ...] with N >= 1."
        )
    declared = math.prod(shape) * dtype.itemsize
    available = stored_bytes - file.tell()
    if declared != available:
        raise UserError(
            ErrorCode.BAD_HEADER,
            f"{what}'s header declares {declared} bytes of data but the file holds {available}.",
        )
    return shape, dtype


def map_npy(path: Path, what: str) -> np.ndarray:
    """Map an .npy read-only after its header checks; its pages are read only when used."""
    with open(path, "rb") as file:
        read_npy_header(file, path.stat().st_size, what)
    array: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    return array


def _npz_members(archive: zipfile.ZipFile, limits: DataLimits) -> dict[str, zipfile.ZipInfo]:
    members = {m.filename: m for m in check_zip(archive, limits.archive(), what="The .npz")}
    if TOKEN_IDS_MEMBER in members:
        return token_members(members)
    unexpected = set(members) - {f"{name}.npy" for name in NPZ_MEMBERS}
    if "x.npy" not in members or unexpected:
        raise UserError(
            ErrorCode.NPZ_MEMBERS,
            "An .npz dataset holds an array 'x' and optionally labels 'y', nothing else, "
            "or token arrays named like the teacher's inputs ('input_ids' required)"
            + (f" (found {sorted(unexpected)[:5]})." if unexpected else "."),
        )
    return {name: members[f"{name}.npy"] for name in NPZ_MEMBERS if f"{name}.npy" in members}


def _npz_headers(path: Path, limits: DataLimits) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's (shape, dtype), its header checked against its declared size."""
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for name, member in _npz_members(archive, limits).items():
                with archive.open(member) as file:
                    what = f"Member {member.filename!r}"
                    headers[name] = read_npy_header(file, member.file_size, what)
    except zipfile.BadZipFile as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, "The .npz file is not a valid zip archive.") from exc
    first = "input_ids" if "input_ids" in headers else "x"
    label = "label" if first == "input_ids" else "y"
    if label in headers:
        shape, dtype = headers[label]
        if dtype.kind not in "iu" or len(shape) != 1:
            raise UserError(ErrorCode.BAD_LABELS, "Labels must be a 1-D array of integers.")
        if shape[0] != headers[first][0][0]:
            raise UserError(
                ErrorCode.BAD_LABELS, f"{shape[0]} labels for {headers[first][0][0]} samples."
            )
    if first == "input_ids":
        check_token_headers(headers)
    return headers


def _npz_num_classes(
    path: Path, header: tuple[tuple[int, ...], np.dtype], member: str = "y.npy"
) -> int | None:
    """max + 1 of the labels member, read from the archive in chunks; negatives refused."""
    (count,), dtype = header
    top = -1
    with zipfile.ZipFile(path) as archive, archive.open(member) as file:
        _skip_header(file)
        for start in range(0, count, LABEL_CHUNK):
            rows = min(count, start + LABEL_CHUNK) - start
            chunk = np.frombuffer(file.read(rows * dtype.itemsize), dtype=dtype)
            if chunk.min() < 0:
                raise UserError(ErrorCode.BAD_LABELS, "Labels must be non-negative class indices.")
            top = max(top, int(chunk.max()))
    return None if count == 0 else top + 1


def _skip_header(file: IO[bytes]) -> None:
    version = np.lib.format.read_magic(file)
    reader = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0
    )
    reader(file)


def _extract_npz(
    path: Path, scratch: Path, limits: DataLimits
) -> tuple[np.ndarray, np.ndarray | None]:
    """Extract the members once into ``scratch`` (after their headers pass), then map them."""
    headers = _npz_headers(path, limits)
    done = scratch / "npz.json"
    if not done.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path) as archive:
            for name in headers:
                # ZipFile stops at each member's declared size, which check_zip capped.
                with archive.open(f"{name}.npy") as src, open(scratch / f"{name}.npy", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        done.write_text(json.dumps(sorted(headers)))
    x = map_npy(scratch / "x.npy", "Member 'x.npy'")
    y = map_npy(scratch / "y.npy", "Member 'y.npy'") if "y" in headers else None
    if y is not None:
        _check_mapped_labels(y, len(x))
    return x, y


def _extract_members(
    path: Path, scratch: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]
) -> dict[str, np.ndarray]:
    """Extract the members once into ``scratch`` (after their headers pass), then map them."""
    done = scratch / "npz.json"
    if not done.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path) as archive:
            for name in headers:
                with archive.open(f"{name}.npy") as src, open(scratch / f"{name}.npy", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        done.write_text(json.dumps(sorted(headers)))
    arrays = {name: map_npy(scratch / f"{name}.npy", f"Member '{name}.npy'") for name in headers}
    if "label" in arrays:
        _check_mapped_labels(arrays["label"], len(arrays["input_ids"]))
    return arrays


def _check_mapped_labels(y: np.ndarray, num_samples: int) -> None:
    check_labels(y[:0], 0)  # dtype and rank
    if len(y) != num_samples:
        raise UserError(ErrorCode.BAD_LABELS, f"{len(y)} labels for {num_samples} samples.")
    if len(y) and _label_min(y) < 0:
        raise UserError(ErrorCode.BAD_LABELS, "Labels must be non-negative class indices.")


def _label_min(y: np.ndarray) -> int:
    return min(int(y[i : i + LABEL_CHUNK].min()) for i in range(0, len(y), LABEL_CHUNK))
