"""Every dataset format loads to the right tensors and metadata."""

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from engine.data import inspect_dataset, load_dataset
from tests.engine.hostile import image_bytes


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(12, 64)).astype(np.float32)


@pytest.fixture
def labels() -> np.ndarray:
    return np.arange(12, dtype=np.int64) % 3


def test_npy_is_memory_mapped_and_described(tmp_path: Path, features: np.ndarray) -> None:
    path = tmp_path / "x.npy"
    np.save(path, features)
    assert inspect_dataset(path, "npy") == {
        "num_samples": 12,
        "sample_shape": [64],
        "dtype": "float32",
        "has_labels": False,
        "num_classes": None,
    }
    data = load_dataset(path, "npy")
    assert data.y is None and data.x.dtype == torch.float32
    np.testing.assert_array_equal(data.x.numpy(), features)


def test_npy_of_integers_becomes_float32(tmp_path: Path) -> None:
    path = tmp_path / "ints.npy"
    np.save(path, np.arange(6, dtype=">i4").reshape(3, 2))  # big-endian too
    data = load_dataset(path, "npy")
    assert data.x.dtype == torch.float32
    assert data.x.tolist() == [[0, 1], [2, 3], [4, 5]]


def test_npy_features_reshape_to_the_teacher_shape(tmp_path: Path, features: np.ndarray) -> None:
    path = tmp_path / "x.npy"
    np.save(path, features)
    assert load_dataset(path, "npy", sample_shape=[1, 8, 8]).x.shape == (12, 1, 8, 8)


def test_npz_with_labels(tmp_path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=features, y=labels)
    info = inspect_dataset(path, "npz")
    assert info["has_labels"] and info["num_classes"] == 3 and info["num_samples"] == 12
    data = load_dataset(path, "npz")
    assert data.y is not None and data.y.dtype == torch.int64
    assert data.y.tolist() == labels.tolist()
    np.testing.assert_array_equal(data.x.numpy(), features)


def test_csv_with_label_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1.5,2,0\n3,4.25,2\n5,6,1\n")
    info = inspect_dataset(path, "csv")
    assert info == {
        "num_samples": 3,
        "sample_shape": [2],
        "dtype": "float32",
        "has_labels": True,
        "num_classes": 3,
    }
    data = load_dataset(path, "csv")
    assert data.x.tolist() == [[1.5, 2.0], [3.0, 4.25], [5.0, 6.0]]
    assert data.y is not None and data.y.tolist() == [0, 2, 1]


def test_csv_without_header_keeps_the_first_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("1;2;3\n4;5;6\n")
    data = load_dataset(path, "csv")
    assert data.x.tolist() == [[1, 2, 3], [4, 5, 6]] and data.y is None


def test_parquet_with_labels(tmp_path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    path = tmp_path / "d.parquet"
    columns = {f"f{index}": features[:, index] for index in range(4)}
    pq.write_table(pa.table({**columns, "label": labels}), path)
    info = inspect_dataset(path, "parquet")
    assert info["sample_shape"] == [4] and info["num_classes"] == 3
    data = load_dataset(path, "parquet")
    np.testing.assert_array_equal(data.x.numpy(), features[:, :4])


def test_mean_and_std_normalise_per_channel(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((2, 2, 3, 3), dtype=np.float32))
    data = load_dataset(path, "npy", mean=[1.0, 0.0], std=[1.0, 0.5])
    assert data.x[:, 0].eq(0).all() and data.x[:, 1].eq(2).all()


def _image_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_image_zip_with_class_folders_gives_labels(tmp_path: Path) -> None:
    path = _image_zip(
        tmp_path / "imgs.zip",
        {
            "digits/cat/a.png": image_bytes("L", (8, 6), "PNG", 255),
            "digits/cat/b.jpg": image_bytes("L", (8, 6), "JPEG", 0),
            "digits/ant/c.png": image_bytes("L", (8, 6), "PNG", 51),
            "__MACOSX/digits/._c.png": b"junk",
        },
    )
    info = inspect_dataset(path, "image_zip")
    assert info == {
        "num_samples": 3,
        "sample_shape": [1, 6, 8],
        "dtype": "uint8",
        "has_labels": True,
        "num_classes": 2,
    }
    data = load_dataset(path, "image_zip")
    assert data.x.shape == (3, 1, 6, 8) and data.x.dtype == torch.float32
    assert data.y is not None and data.y.tolist() == [1, 1, 0]  # ant=0, cat=1
    assert data.x[0].eq(1.0).all() and data.x[2].allclose(torch.tensor(0.2))


def test_image_zip_converts_to_majority_mode_and_resizes(tmp_path: Path) -> None:
    path = _image_zip(
        tmp_path / "imgs.zip",
        {
            "a.png": image_bytes("RGB", (10, 10), "PNG"),
            "b.png": image_bytes("RGB", (4, 4), "PNG"),
            "c.png": image_bytes("L", (10, 10), "PNG"),
        },
    )
    info = inspect_dataset(path, "image_zip")
    assert info["sample_shape"] == [3, 10, 10] and not info["has_labels"]
    data = load_dataset(path, "image_zip", sample_shape=[3, 8, 8])
    assert data.x.shape == (3, 3, 8, 8) and data.y is None
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0


def test_dataset_caps_come_from_the_settings_through_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine reads no settings: the host puts its caps in the request
    (``engine_limits``), whose defaults are the settings' defaults."""
    from core.contracts import InspectDatasetRequest
    from core.settings import Settings, engine_limits, get_settings
    from engine.data import DataLimits

    defaults = Settings.model_fields
    assert DataLimits().max_entries == defaults["max_archive_entries"].default
    assert DataLimits().max_unpacked_bytes == defaults["max_unpacked_bytes"].default
    assert DataLimits().max_image_pixels == defaults["max_image_pixels"].default
    monkeypatch.setenv("STILLHOUSE_MAX_ARCHIVE_ENTRIES", "7")
    get_settings.cache_clear()
    try:
        request = InspectDatasetRequest(
            path="x", format="npz", limits=engine_limits(get_settings())
        )
        sent = InspectDatasetRequest.model_validate_json(request.model_dump_json())
        assert DataLimits.of(sent.limits).max_entries == 7
    finally:
        monkeypatch.delenv("STILLHOUSE_MAX_ARCHIVE_ENTRIES")
        get_settings.cache_clear()
