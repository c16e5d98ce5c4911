"""Datasets as rows read per batch: mapped files keep their dtype, nothing is read whole."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine import tables
from engine.data import load_dataset, open_dataset
from engine.errors import UserError
from engine.rows import ArrayRows, row_chunks
from engine.soft_labels import cached_soft_labels, compute_soft_labels, load_soft_labels
from engine.students.layers import Standardize
from tests.engine.helpers import ModuleTeacher
from tests.engine.hostile import image_bytes

CPU = torch.device("cpu")


def test_uint8_npy_stays_uint8_and_mapped_until_a_batch_is_cast(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 256, size=(50, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", values)
    rows = open_dataset(tmp_path / "x.npy", "npy", scratch=tmp_path / "s", sample_shape=[16])
    assert isinstance(rows, ArrayRows) and isinstance(rows.x, np.memmap)
    assert rows.x.dtype == np.uint8 and not rows.x.flags.writeable
    batch = rows.read(np.array([7, 3]))
    assert batch.dtype == torch.float32 and batch.shape == (2, 16)
    assert batch.tolist() == values[[7, 3]].reshape(2, 16).astype(np.float32).tolist()
    assert not (tmp_path / "s").exists()  # an .npy is mapped where it is, never copied


def test_unsorted_reads_from_a_map_come_back_in_the_asked_order(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    rows = open_dataset(tmp_path / "x.npy", "npy", scratch=tmp_path)
    idx = np.random.default_rng(2).permutation(100)[:40]
    np.testing.assert_array_equal(rows.read(idx).numpy(), values[idx])
    np.testing.assert_array_equal(rows.read(np.arange(10, 20)).numpy(), values[10:20])


def test_npz_is_extracted_once_and_mapped(tmp_path: Path) -> None:
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = np.arange(20, dtype=np.int64) % 4
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    scratch = tmp_path / "scratch"
    rows = open_dataset(tmp_path / "d.npz", "npz", scratch=scratch)
    assert isinstance(rows, ArrayRows) and isinstance(rows.x, np.memmap)
    extracted = (scratch / "x.npy").stat().st_mtime_ns
    again = open_dataset(tmp_path / "d.npz", "npz", scratch=scratch)
    assert (scratch / "x.npy").stat().st_mtime_ns == extracted
    labels = again.labels(np.array([5, 1]))
    assert labels is not None and labels.tolist() == [1, 1]
    np.testing.assert_array_equal(again.read(np.array([19, 0])).numpy(), x[[19, 0]])


def test_parquet_is_read_by_row_groups_into_a_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "BLOCK_ROWS", 7)
    features = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    columns = {f"f{i}": features[:, i] for i in range(4)}
    labels = np.arange(50) % 3
    pq.write_table(pa.table({**columns, "label": labels}), tmp_path / "d.parquet", row_group_size=9)
    rows = open_dataset(tmp_path / "d.parquet", "parquet", scratch=tmp_path / "s")
    assert isinstance(rows, ArrayRows) and isinstance(rows.x, np.memmap)
    np.testing.assert_array_equal(rows.read(np.arange(50)).numpy(), features)
    got = rows.labels(np.arange(50))
    assert got is not None and got.tolist() == labels.tolist()


def test_a_bad_block_late_in_a_csv_is_found(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    body = "".join(f"{i},{i}\n" for i in range(20_000))
    path.write_text("a,b\n" + body + "1,\n")
    with pytest.raises(UserError) as caught:
        load_dataset(path, "csv")
    assert caught.value.code in ("missing_values", "bad_csv")


def test_image_zip_rows_decode_only_what_a_batch_asks_for(tmp_path: Path) -> None:
    path = tmp_path / "imgs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index, value in enumerate((0, 50, 100, 150, 200)):
            archive.writestr(f"{index}.png", image_bytes("L", (4, 4), "PNG", value))
    rows = open_dataset(path, "image_zip", scratch=tmp_path / "s")
    whole = load_dataset(path, "image_zip").x
    assert rows.sample_shape == (1, 4, 4)
    torch.testing.assert_close(rows.read(np.array([4, 1])), whole[[4, 1]])


def test_streaming_statistics_match_the_whole_tensor() -> None:
    x = torch.randn(1000, 3, 5, 5, dtype=torch.float64).float() * 4 + 2
    whole, chunked = Standardize((3, 1, 1)), Standardize((3, 1, 1))
    whole.fit(x)
    chunked.fit(torch.split(x, 37))
    expected_mean = x.double().mean(dim=(0, 2, 3))
    expected_std = x.double().permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    torch.testing.assert_close(chunked.mean.flatten().double(), expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        1 / chunked.inv_std.flatten().double(), expected_std, rtol=1e-6, atol=1e-6
    )
    torch.testing.assert_close(whole.inv_std, chunked.inv_std)


def test_row_chunks_cover_every_row_once(tmp_path: Path) -> None:
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    chunks = list(row_chunks(ArrayRows(values), chunk_rows=4))
    assert [start for start, _ in chunks] == [0, 4, 8]
    assert torch.cat([c for _, c in chunks]).tolist() == values.tolist()


def _teacher(classes: int = 5) -> ModuleTeacher:
    torch.manual_seed(0)
    return ModuleTeacher(nn.Linear(8, classes), classes, [None, 8])


@pytest.mark.parametrize("top_k", [None, 2])
def test_soft_labels_are_written_batch_by_batch_into_a_mapped_safetensors_file(
    tmp_path: Path, top_k: int | None
) -> None:
    x = torch.randn(40, 8)
    path = tmp_path / "labels.safetensors"
    labels = cached_soft_labels([_teacher()], x, CPU, top_k=top_k, path=path, key="k", batch_size=6)
    in_memory = compute_soft_labels([_teacher()], x, CPU, top_k=top_k, batch_size=6)
    everything = torch.arange(40)
    assert torch.equal(labels.batch(everything), in_memory.batch(everything))
    # A standard safetensors file, readable by the library itself.
    stored = load_file(str(path))
    assert stored.keys() == in_memory.tensors().keys()
    for name, tensor in in_memory.tensors().items():
        assert torch.equal(stored[name], tensor)
    loaded = load_soft_labels(path, "k", 40)
    assert loaded is not None and isinstance(loaded.mapped, np.memmap)
    assert torch.equal(loaded.batch(everything), in_memory.batch(everything))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_truncated_soft_label_file_is_a_cache_miss(tmp_path: Path) -> None:
    path = tmp_path / "labels.safetensors"
    cached_soft_labels(
        [_teacher()], torch.randn(40, 8), CPU, top_k=None, path=path, key="k", batch_size=8
    )
    path.write_bytes(path.read_bytes()[:-2])
    assert load_soft_labels(path, "k", 40) is None
