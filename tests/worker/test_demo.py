"""The demo files: real teachers that agree across formats, and datasets of the right shapes."""

from __future__ import annotations

import csv
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from worker.demo import write_demo_files

EXPECTED = [
    "teacher_mlp.pt2",
    "teacher_mlp.onnx",
    "teacher_cnn.pt2",
    "transfer.npz",
    "transfer_labeled.npz",
    "eval.npz",
    "transfer_images.npz",
    "eval_images.npz",
    "transfer.csv",
]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _pt2_logits(path: Path, x: np.ndarray) -> np.ndarray:
    # Our own file, just written: torch.export.load is fine here (never on uploads).
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(x)).numpy())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], float]:
    """The files, written once for this module, and how long writing them took."""
    started = time.monotonic()
    paths = write_demo_files(tmp_path_factory.mktemp("demo"))
    return paths, time.monotonic() - started


def test_demo_files(demo: tuple[list[Path], float]) -> None:
    paths, elapsed = demo
    assert elapsed < 60, f"write_demo_files took {elapsed:.1f}s"
    folder = paths[0].parent
    assert [p.name for p in paths] == EXPECTED
    assert all(p.is_file() and p.parent == folder for p in paths)
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXPECTED)  # no temporary files

    transfer = _npz(folder / "transfer.npz")
    labeled = _npz(folder / "transfer_labeled.npz")
    evaluation = _npz(folder / "eval.npz")
    images = _npz(folder / "transfer_images.npz")
    eval_images = _npz(folder / "eval_images.npz")
    assert set(transfer) == {"x"} and set(images) == {"x"}  # unlabeled transfer sets
    n_transfer, n_eval = len(transfer["x"]), len(evaluation["x"])
    assert n_transfer + n_eval == 1797 and n_transfer == round(0.6 * 1797)
    assert transfer["x"].shape == (n_transfer, 64) and transfer["x"].dtype == np.float32
    assert evaluation["x"].shape == (n_eval, 64) and evaluation["y"].dtype == np.int64
    assert transfer["x"].min() >= 0.0 and transfer["x"].max() <= 1.0
    np.testing.assert_array_equal(labeled["x"], transfer["x"])
    assert set(np.unique(labeled["y"])) == set(range(10))
    assert images["x"].shape == (n_transfer, 1, 8, 8)
    np.testing.assert_array_equal(images["x"].reshape(n_transfer, 64), transfer["x"])
    np.testing.assert_array_equal(eval_images["x"].reshape(n_eval, 64), evaluation["x"])
    np.testing.assert_array_equal(eval_images["y"], evaluation["y"])

    with open(folder / "transfer.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [f"p{i}" for i in range(64)] + ["label"]
    table = np.array(rows[1:], dtype=np.float64)
    np.testing.assert_array_equal(table[:, :64].astype(np.float32), transfer["x"])
    np.testing.assert_array_equal(table[:, 64].astype(np.int64), labeled["y"])

    x, y = evaluation["x"], evaluation["y"]
    pt2 = _pt2_logits(folder / "teacher_mlp.pt2", x)
    session = ort.InferenceSession(
        str(folder / "teacher_mlp.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_inputs()[0].shape[1:] == [64]  # batch is symbolic
    onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert pt2.shape == onnx.shape == (n_eval, 10)
    np.testing.assert_allclose(onnx, pt2, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(onnx.argmax(axis=1), pt2.argmax(axis=1))
    assert (pt2.argmax(axis=1) == y).mean() >= 0.95
    # Any batch size, including one.
    one = session.run(None, {session.get_inputs()[0].name: x[:1]})[0]
    np.testing.assert_allclose(one, onnx[:1], rtol=1e-4, atol=1e-4)

    cnn = _pt2_logits(folder / "teacher_cnn.pt2", eval_images["x"])
    assert cnn.shape == (n_eval, 10)
    assert (cnn.argmax(axis=1) == y).mean() >= 0.95

    with zipfile.ZipFile(folder / "teacher_mlp.pt2") as archive:
        assert any(name.endswith("models/model.json") for name in archive.namelist())
    params = sum(p.numel() for p in torch.export.load(str(paths[0])).module().parameters())
    assert 1_000_000 <= params <= 1_600_000


def test_demo_files_are_deterministic(demo: tuple[list[Path], float], tmp_path: Path) -> None:
    first = demo[0]
    second = write_demo_files(tmp_path / "again")
    for a, b in zip(first, second, strict=True):
        if a.suffix in (".npz", ".csv"):
            assert a.read_bytes() == b.read_bytes(), a.name
    np.testing.assert_array_equal(
        _pt2_logits(first[0], _npz(first[5])["x"]), _pt2_logits(second[0], _npz(second[5])["x"])
    )
