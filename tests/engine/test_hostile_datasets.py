"""Hostile dataset uploads are refused with a UserError, and no payload ever runs."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.data import DataLimits, inspect_dataset, load_dataset
from engine.errors import UserError
from tests.engine import hostile


def refused(path: Path, fmt: str, limits: DataLimits | None = None) -> str:
    with pytest.raises(UserError) as caught:
        inspect_dataset(path, fmt, limits=limits)
    with pytest.raises(UserError):
        load_dataset(path, fmt, limits=limits)
    return caught.value.code


def test_npy_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "obj.npy"
    np.save(path, np.array([hostile.MarkerPayload(marker)], dtype=object), allow_pickle=True)
    assert refused(path, "npy") == "object_array"
    assert not marker.exists()


def test_npy_with_a_lying_header_is_refused(tmp_path: Path) -> None:
    path = hostile.npy_with_lying_header(tmp_path / "lie.npy")
    assert path.stat().st_size < 2048
    assert refused(path, "npy") == "bad_header"


def test_npy_truncated_by_one_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.zeros((4, 4), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-1])
    assert refused(path, "npy") == "bad_header"


def test_npy_structured_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]))
    assert refused(path, "npy") == "structured_array"


def test_npz_with_a_pickled_member_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    payload = np.array([hostile.MarkerPayload(marker)], dtype=object)
    np.savez(path, x=np.zeros((1, 2)), y=payload)
    assert refused(path, "npz") == "object_array"
    assert not marker.exists()


def test_npz_with_unexpected_members_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "extra.npz"
    np.savez(path, x=np.zeros((1, 2)), other=np.zeros(1))
    assert refused(path, "npz") == "npz_members"


def test_npz_with_float_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float_labels.npz"
    np.savez(path, x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))
    assert refused(path, "npz") == "bad_labels"


def test_npz_with_negative_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "negative.npz"
    np.savez(path, x=np.zeros((2, 2)), y=np.array([0, -1]))
    assert refused(path, "npz") == "bad_labels"


@pytest.mark.parametrize(
    ("name", "code"),
    [("../evil.npy", "archive_traversal"), ("/abs/x.npy", "archive_traversal")],
)
def test_zip_traversal_is_refused(tmp_path: Path, name: str, code: str) -> None:
    path = hostile.zip_with_entries(tmp_path / "t.npz", {name: b"x"})
    assert refused(path, "npz") == code
    path = hostile.zip_with_entries(tmp_path / "t.zip", {name: b"x"})
    assert refused(path, "image_zip") == code


def test_image_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    entries = {"a.png": hostile.image_bytes("L", (2, 2), "PNG"), "b.png": b"/etc/passwd"}
    path = hostile.zip_with_entries(tmp_path / "l.zip", entries, links=("b.png",))
    assert refused(path, "image_zip") == "archive_link"


def test_entry_count_bomb_is_refused(tmp_path: Path) -> None:
    entries = {f"{index}.png": b"" for index in range(30)}
    path = hostile.zip_with_entries(tmp_path / "many.zip", entries)
    assert refused(path, "image_zip", DataLimits(max_entries=10)) == "too_many_entries"


def test_unpacked_size_cap_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", b"\0" * 1_000_000)  # compresses to about 1 KB
    assert refused(path, "image_zip", DataLimits(max_unpacked_bytes=100_000)) == (
        "archive_too_large"
    )


def test_csv_with_non_numeric_junk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.csv"
    path.write_text("a,b\n1,2\n3,rm -rf /\n")
    assert refused(path, "csv") == "non_numeric"


def test_csv_with_empty_cells_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "holes.csv"
    path.write_text("a,b\n1,2\n3,\n")
    assert refused(path, "csv") == "missing_values"


@pytest.mark.parametrize("image_format", ["GIF", "BMP"])
def test_image_zip_with_other_image_formats_is_refused(tmp_path: Path, image_format: str) -> None:
    entries = {
        "a.png": hostile.image_bytes("L", (4, 4), "PNG"),
        "b.png": hostile.image_bytes("L", (4, 4), image_format),
    }
    path = hostile.zip_with_entries(tmp_path / "mixed.zip", entries)
    assert refused(path, "image_zip") == "unsupported_image"


def test_decompression_bomb_png_is_refused(tmp_path: Path) -> None:
    bomb = hostile.png_bomb()
    assert len(bomb) < 100_000
    path = hostile.zip_with_entries(tmp_path / "bomb.zip", {"bomb.png": bomb})
    assert refused(path, "image_zip") == "image_too_large"


def test_png_over_our_pixel_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    path = hostile.zip_with_entries(
        tmp_path / "wide.zip", {"wide.png": hostile.png_bomb(width=5000, height=5000)}
    )
    assert refused(path, "image_zip") == "image_too_large"


def test_damaged_png_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 64).save(buffer, format="PNG")  # noise: IDAT stays large
    path = hostile.zip_with_entries(tmp_path / "cut.zip", {"a.png": buffer.getvalue()[:1000]})
    with pytest.raises(UserError) as caught:
        load_dataset(path, "image_zip")
    assert caught.value.code == "bad_image"


def test_unknown_dataset_format_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path / "missing", "pickle") == "unsupported_format"
