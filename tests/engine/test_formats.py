"""Uploads are recognised by content, whatever their file names say."""

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.formats import sniff_dataset, sniff_teacher
from tests.engine.hostile import MLP, image_bytes, save_onnx, save_pt2


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sniff")
    return {
        "pt2": save_pt2(MLP(), torch.zeros(2, 64), folder / "a.bin", dynamic=True),
        "onnx": save_onnx(MLP(), torch.zeros(2, 64), folder / "b.bin"),
    }


def test_pt2_archive_is_torch_export(teachers: dict[str, Path]) -> None:
    assert sniff_teacher(teachers["pt2"]) == "torch_export"


def test_onnx_is_recognised_without_magic(teachers: dict[str, Path]) -> None:
    assert sniff_teacher(teachers["onnx"]) == "onnx"


def test_torchscript_zip_layout(tmp_path: Path) -> None:
    path = tmp_path / "ts"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("m/data.pkl", "m/code/__torch__.py", "m/constants.pkl", "m/version"):
            archive.writestr(name, b"")
    assert sniff_teacher(path) == "torchscript"


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x08\x07\x12\x03abc", b"PK\x03\x04"])
def test_garbage_is_no_teacher(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    assert sniff_teacher(path) is None


def test_dataset_formats_by_content(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 3)))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 3)))
    (tmp_path / "c").write_text("a,b\n1,2\n")
    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "d")
    with zipfile.ZipFile(tmp_path / "e", "w") as archive:
        archive.writestr("cls/a.PNG", image_bytes("L", (2, 2), "PNG"))
    found = {name: sniff_dataset(tmp_path / name) for name in ("a.npy", "b.npz", "c", "d", "e")}
    assert found == {"a.npy": "npy", "b.npz": "npz", "c": "csv", "d": "parquet", "e": "image_zip"}


@pytest.mark.parametrize("content", [b"\xff\xfe\x00junk", b"justoneword\n", "é".encode("latin-1")])
def test_garbage_is_no_dataset(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    assert sniff_dataset(path) is None
