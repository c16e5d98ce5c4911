"""Load an uploaded dataset behind the guards: whole tensors, never pickles.

Arrays (.npy) are memory-mapped after their header has been checked against the file size,
so a lying header cannot make us allocate. Tables (CSV, Parquet) go through pyarrow in one
call. Images are the one per-sample loop: each must be decoded anyway.
"""

import io
import math
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch

from worker.distill.errors import UserError
from worker.distill.guard import (
    ArchiveLimits,
    check_zip,
    current_caps,
    image_member_bytes,
    read_member,
)

DATASET_FORMATS = ("npy", "npz", "csv", "parquet", "image_zip")
LABEL_COLUMN = "label"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass(frozen=True)
class DataLimits:
    """The operator's caps (guard.current_caps(), from Settings) unless a caller sets them."""

    max_entries: int = field(default_factory=lambda: current_caps().max_entries)
    max_unpacked_bytes: int = field(default_factory=lambda: current_caps().max_unpacked_bytes)
    # Per image; PIL's own bomb check is far looser.
    max_image_pixels: int = field(default_factory=lambda: current_caps().max_image_pixels)

    def archive(self) -> ArchiveLimits:
        return ArchiveLimits(max_entries=self.max_entries, max_total_bytes=self.max_unpacked_bytes)


@dataclass
class ArrayData:
    x: torch.Tensor  # float32 [N, ...]
    y: torch.Tensor | None  # int64 [N]


def inspect_dataset(
    path: str | Path, fmt: str, *, limits: DataLimits | None = None
) -> dict[str, Any]:
    """Describe the dataset: num_samples, sample_shape, dtype, has_labels, num_classes."""
    limits = limits or DataLimits()
    if fmt == "image_zip":
        scan = _scan_images(Path(path), limits)
        channels = 1 if scan.mode == "L" else 3
        height, width = scan.size
        return {
            "num_samples": len(scan.members),
            "sample_shape": [channels, height, width],
            "dtype": "uint8",
            "has_labels": scan.labels is not None,
            "num_classes": len(scan.classes) if scan.labels is not None else None,
        }
    x, y = _load_arrays(Path(path), fmt, limits)
    return {
        "num_samples": int(x.shape[0]),
        "sample_shape": [int(dim) for dim in x.shape[1:]],
        "dtype": x.dtype.name,
        "has_labels": y is not None,
        "num_classes": _num_classes(y),
    }


def load_dataset(
    path: str | Path,
    fmt: str,
    *,
    sample_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limits: DataLimits | None = None,
) -> ArrayData:
    """Return the whole dataset as tensors: x float32 [N, ...], y int64 [N] or None.

    Images are decoded to [0, 1], channels first, resized to sample_shape[-2:] when given
    (else to the first image's size). Arrays whose sample shape differs from sample_shape
    but holds as many numbers are reshaped (64 features feed a 1x8x8 teacher).
    """
    limits = limits or DataLimits()
    if fmt == "image_zip":
        x, y = _decode_images(Path(path), limits, sample_shape)
    else:
        array, labels = _load_arrays(Path(path), fmt, limits)
        x = _as_float_tensor(array)
        y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
        if sample_shape is not None:
            x = _reshape_samples(x, sample_shape)
    if mean is not None or std is not None:
        x = _normalise(x, mean or [0.0], std or [1.0])
    return ArrayData(x=x, y=y)


# --- arrays -------------------------------------------------------------------------------


def _load_arrays(path: Path, fmt: str, limits: DataLimits) -> tuple[np.ndarray, np.ndarray | None]:
    if fmt == "npy":
        return _load_npy(path), None
    if fmt == "npz":
        return _load_npz(path, limits)
    if fmt in ("csv", "parquet"):
        return _load_table(path, fmt)
    raise UserError("unsupported_format", f"Datasets must be one of {DATASET_FORMATS}.")


def _read_npy_header(
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
        raise UserError("bad_header", f"{what} has an unreadable .npy header.") from exc
    if dtype.hasobject:
        raise UserError(
            "object_array", f"{what} holds Python objects; save a numeric array instead."
        )
    if dtype.fields is not None or dtype.subdtype is not None:
        raise UserError("structured_array", f"{what} is a structured array; save plain numbers.")
    if dtype.kind not in "biuf":
        raise UserError("unsupported_dtype", f"{what} has dtype {dtype}; numbers only.")
    if not shape or shape[0] < 1:
        raise UserError("bad_shape", f"{what} must be an array of shape [N, ...] with N >= 1.")
    declared = math.prod(shape) * dtype.itemsize
    available = stored_bytes - file.tell()
    if declared != available:
        raise UserError(
            "bad_header",
            f"{what}'s header declares {declared} bytes of data but the file holds {available}.",
        )
    return shape, dtype


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as file:
        _read_npy_header(file, path.stat().st_size, "The .npy file")
    # "c" (copy-on-write) rather than "r": torch refuses read-only buffers with a warning,
    # and pages are still only read when used.
    array: np.ndarray = np.load(path, mmap_mode="c", allow_pickle=False)
    return array


def _load_npz(path: Path, limits: DataLimits) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m.filename: m for m in check_zip(archive, limits.archive(), what="The .npz")}
            unexpected = set(members) - {"x.npy", "y.npy"}
            if "x.npy" not in members or unexpected:
                raise UserError(
                    "npz_members",
                    "An .npz dataset holds an array 'x' and optionally labels 'y', nothing else"
                    + (f" (found {sorted(unexpected)[:5]})." if unexpected else "."),
                )
            x = _read_npz_member(archive, members["x.npy"])
            y = _read_npz_member(archive, members["y.npy"]) if "y.npy" in members else None
    except zipfile.BadZipFile as exc:
        raise UserError("bad_archive", "The .npz file is not a valid zip archive.") from exc
    if y is not None:
        _check_labels(y, int(x.shape[0]))
    return x, y


def _read_npz_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    what = f"Member {member.filename!r}"
    with archive.open(member) as file:
        _read_npy_header(file, member.file_size, what)
    with archive.open(member) as file:
        return np.lib.format.read_array(file, allow_pickle=False)


def _load_table(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    import pyarrow as pa

    try:
        table = _read_csv(path) if fmt == "csv" else _read_parquet(path)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"bad_{fmt}", f"The {fmt} file cannot be parsed: {exc}"[:300]) from exc
    if table.num_rows < 1:
        raise UserError("bad_shape", f"The {fmt} file has no rows.")
    features = [name for name in table.column_names if name != LABEL_COLUMN]
    if not features:
        raise UserError("bad_shape", f"The {fmt} file has no feature columns.")
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise UserError(
                "non_numeric",
                f"Column {name[:60]!r} is {column.type}, not numbers; features must be numeric.",
            )
        if column.null_count:
            raise UserError("missing_values", f"Column {name[:60]!r} has empty cells.")
    # One cast per column: no per-sample Python.
    x = np.stack([table.column(name).to_numpy().astype(np.float32) for name in features], axis=1)
    y = None
    if LABEL_COLUMN in table.column_names:
        y = table.column(LABEL_COLUMN).to_numpy()
        _check_labels(y, x.shape[0])
    return x, y


def _read_csv(path: Path) -> Any:
    from pyarrow import csv

    with open(path, "rb") as file:
        first_line = file.readline(64 * 1024).decode("utf-8")
    delimiter = max(",;\t", key=first_line.count)
    names = [cell.strip() for cell in first_line.split(delimiter)]
    # A first row of numbers is data, not a header.
    has_header = not all(_is_number(name) for name in names)
    return csv.read_csv(
        path,
        read_options=csv.ReadOptions(autogenerate_column_names=not has_header),
        parse_options=csv.ParseOptions(delimiter=delimiter),
    )


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_labels(y: np.ndarray, num_samples: int) -> None:
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise UserError("bad_labels", "Labels must be a 1-D array of integers.")
    if y.shape[0] != num_samples:
        raise UserError("bad_labels", f"{y.shape[0]} labels for {num_samples} samples.")
    if y.size and y.min() < 0:
        raise UserError("bad_labels", "Labels must be non-negative class indices.")


def _num_classes(y: np.ndarray | None) -> int | None:
    return None if y is None or y.size == 0 else int(y.max()) + 1


def _as_float_tensor(array: np.ndarray) -> torch.Tensor:
    # A native float32 memmap becomes a tensor without a copy; anything else is cast once.
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    return torch.from_numpy(array)


def _reshape_samples(x: torch.Tensor, sample_shape: Sequence[int]) -> torch.Tensor:
    target = [int(dim) for dim in sample_shape]
    if list(x.shape[1:]) == target:
        return x
    if math.prod(x.shape[1:]) != math.prod(target):
        raise UserError(
            "shape_mismatch",
            f"Samples of shape {list(x.shape[1:])} cannot feed a teacher expecting {target}.",
        )
    return x.reshape(x.shape[0], *target)


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    channels = x.shape[1] if x.ndim > 1 else 1
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise UserError("bad_preprocessing", f"{name} needs 1 or {channels} values.")
    if any(value == 0 for value in std):
        raise UserError("bad_preprocessing", "std values must be non-zero.")
    view = [1, -1, *([1] * (x.ndim - 2))] if x.ndim > 1 else [-1]
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(view)
    std_t = torch.tensor(std, dtype=torch.float32).reshape(view)
    return (x - mean_t) / std_t


# --- image zips ---------------------------------------------------------------------------


@dataclass
class _ImageScan:
    members: list[zipfile.ZipInfo]
    labels: list[int] | None
    classes: list[str]
    mode: str  # "L" or "RGB": the majority, every image is converted to it
    size: tuple[int, int]  # (height, width) shared by all, else the first image's


def _scan_images(path: Path, limits: DataLimits) -> _ImageScan:
    """Check every entry and read every image header; decode nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = check_zip(archive, limits.archive(), what="The image zip")
            members = [m for m in entries if not m.is_dir() and not _is_junk(m.filename)]
            if not members:
                raise UserError("bad_shape", "The image zip holds no images.")
            modes: Counter[str] = Counter()
            sizes: list[tuple[int, int]] = []
            for member in members:
                with _open_image(archive, member, limits) as image:
                    modes["L" if image.mode in _GREY_MODES else "RGB"] += 1
                    sizes.append((image.height, image.width))
    except zipfile.BadZipFile as exc:
        raise UserError("bad_archive", "The image zip is not a valid zip archive.") from exc
    labels, classes = _folder_labels([m.filename for m in members])
    # Ties go to RGB: converting grey to colour loses nothing.
    mode = "L" if modes["L"] > modes["RGB"] else "RGB"
    return _ImageScan(members, labels, classes, mode, sizes[0])


def _is_junk(name: str) -> bool:
    # macOS Finder adds __MACOSX/ AppleDouble files and .DS_Store: not images, not data.
    parts = PurePosixPath(name).parts
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def _open_image(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: DataLimits) -> Any:
    from PIL import Image

    name = member.filename[:80]
    data = read_member(
        archive,
        member,
        magic=(_PNG_MAGIC, _JPEG_MAGIC),
        max_bytes=image_member_bytes(limits.max_image_pixels),
        what=f"{name!r}",
        wrong_type="unsupported_image",
    )
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError("image_too_large", f"{name!r} has too many pixels.") from exc
    except Exception as exc:
        raise UserError("bad_image", f"{name!r} cannot be read as PNG or JPEG.") from exc
    if image.width * image.height > limits.max_image_pixels:
        image.close()
        raise UserError(
            "image_too_large",
            f"{name!r} is {image.width}x{image.height}; the limit is "
            f"{limits.max_image_pixels} pixels per image.",
        )
    return image


def _folder_labels(names: list[str]) -> tuple[list[int] | None, list[str]]:
    """One folder per class gives labels; images all at the top level give none."""
    paths = [PurePosixPath(name).parts for name in names]
    # A zipped folder puts everything under one wrapper folder: look inside it.
    while all(len(parts) > 1 for parts in paths) and len({parts[0] for parts in paths}) == 1:
        paths = [parts[1:] for parts in paths]
    depths = {len(parts) for parts in paths}
    if depths == {1}:
        return None, []
    if depths != {2}:
        raise UserError(
            "bad_layout",
            "Put all images at the top level (unlabeled) or in one folder per class.",
        )
    classes = sorted({parts[0] for parts in paths})
    index = {name: position for position, name in enumerate(classes)}
    return [index[parts[0]] for parts in paths], classes


def _decode_images(
    path: Path, limits: DataLimits, sample_shape: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    scan = _scan_images(path, limits)
    mode = scan.mode
    height, width = scan.size
    if sample_shape is not None:
        if len(sample_shape) == 3 and sample_shape[0] in (1, 3):
            mode = "L" if sample_shape[0] == 1 else "RGB"
        height, width = int(sample_shape[-2]), int(sample_shape[-1])
    channels = 1 if mode == "L" else 3
    x = np.empty((len(scan.members), channels, height, width), dtype=np.float32)
    with zipfile.ZipFile(path) as archive:
        for position, member in enumerate(scan.members):
            with _open_image(archive, member, limits) as image:
                x[position] = _to_chw(image, mode, (width, height), member.filename)
    y = None if scan.labels is None else torch.tensor(scan.labels, dtype=torch.int64)
    return torch.from_numpy(x), y


def _to_chw(image: Any, mode: str, size: tuple[int, int], name: str) -> np.ndarray:
    from PIL import Image

    try:
        if image.mode == "P":
            image = image.convert("RGBA")  # palette transparency converts cleanly via RGBA
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise UserError("bad_image", f"{name[:80]!r} is damaged and cannot be decoded.") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
