"""Image zips: every entry checked, every header read once, pixels decoded per batch.

An image zip is the one format that cannot be memory-mapped: its samples are compressed
PNG/JPEG files. ``ImageZipRows`` keeps the archive open and decodes the rows a batch asks
for (converted to the majority mode, resized to the teacher's size, scaled to [0, 1]), so
memory holds one batch of pixels, never the decoded set.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.errors import ErrorCode
from engine.errors import UserError
from engine.guard import RATIO_FREE_BYTES, check_zip, read_member
from engine.rows import Normalise

if TYPE_CHECKING:
    from engine.data import DataLimits

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def image_member_bytes(max_image_pixels: int) -> int:
    """The most a PNG or JPEG within the pixel cap may take in an archive: 4 bytes a pixel
    (RGBA at 8 bits, uncompressed), plus room for its chunks."""
    return 4 * max_image_pixels + RATIO_FREE_BYTES


@dataclass
class ImageScan:
    members: list[zipfile.ZipInfo]
    labels: list[int] | None
    classes: list[str]
    mode: str  # "L" or "RGB": the majority, every image is converted to it
    size: tuple[int, int]  # (height, width) shared by all, else the first image's


def scan_images(path: Path, limits: DataLimits) -> ImageScan:
    """Check every entry and read every image header; decode nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = check_zip(archive, limits.archive(), what="The image zip")
            members = [m for m in entries if not m.is_dir() and not _is_junk(m.filename)]
            if not members:
                raise UserError(ErrorCode.BAD_SHAPE, "The image zip holds no images.")
            modes: Counter[str] = Counter()
            sizes: list[tuple[int, int]] = []
            for member in members:
                with _open_image(archive, member, limits) as image:
                    modes["L" if image.mode in _GREY_MODES else "RGB"] += 1
                    sizes.append((image.height, image.width))
    except zipfile.BadZipFile as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, "The image zip is not a valid zip archive.") from exc
    labels, classes = _folder_labels([m.filename for m in members])
    # Ties go to RGB: converting grey to colour loses nothing.
    mode = "L" if modes["L"] > modes["RGB"] else "RGB"
    return ImageScan(members, labels, classes, mode, sizes[0])


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
        what=f"{name!r} (a PNG or JPEG image)",
        wrong_type=ErrorCode.UNSUPPORTED_IMAGE,
    )
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(ErrorCode.IMAGE_TOO_LARGE, f"{name!r} has too many pixels.") from exc
    except Exception as exc:
        raise UserError(ErrorCode.BAD_IMAGE, f"{name!r} cannot be read as PNG or JPEG.") from exc
    if image.width * image.height > limits.max_image_pixels:
        image.close()
        raise UserError(
            ErrorCode.IMAGE_TOO_LARGE,
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
            ErrorCode.BAD_LAYOUT,
            "Put all images at the top level (unlabeled) or in one folder per class.",
        )
    classes = sorted({parts[0] for parts in paths})
    index = {name: position for position, name in enumerate(classes)}
    return [index[parts[0]] for parts in paths], classes


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
        raise UserError(
            ErrorCode.BAD_IMAGE, f"{name[:80]!r} is damaged and cannot be decoded."
        ) from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ImageZipRows:
    """The images of a zip as rows: float32 ``[b, C, H, W]`` in [0, 1], decoded per batch."""

    def __init__(
        self,
        path: Path,
        limits: DataLimits,
        *,
        sample_shape: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        scan = scan_images(path, limits)
        self.mode, (height, width) = scan.mode, scan.size
        if sample_shape is not None:
            if len(sample_shape) == 3 and sample_shape[0] in (1, 3):
                self.mode = "L" if sample_shape[0] == 1 else "RGB"
            height, width = int(sample_shape[-2]), int(sample_shape[-1])
        self._shape = (1 if self.mode == "L" else 3, height, width)
        self._normalise = Normalise.build(mean, std, self._shape)
        self.path, self.limits, self.members = path, limits, scan.members
        self._labels = None if scan.labels is None else np.asarray(scan.labels, dtype=np.int64)
        self._archive: zipfile.ZipFile | None = None

    @property
    def num_samples(self) -> int:
        return len(self.members)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def read(self, idx: np.ndarray) -> torch.Tensor:
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.path)
        out = np.empty((len(idx), *self._shape), dtype=np.float32)
        size = (self._shape[2], self._shape[1])
        for row, position in enumerate(np.asarray(idx, dtype=np.int64).tolist()):
            member = self.members[position]
            with _open_image(self._archive, member, self.limits) as image:
                out[row] = _to_chw(image, self.mode, size, member.filename)
        x = torch.from_numpy(out)
        return x if self._normalise is None else self._normalise(x)

    def labels(self, idx: np.ndarray) -> torch.Tensor | None:
        return None if self._labels is None else torch.from_numpy(self._labels[idx])
