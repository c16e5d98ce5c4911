from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.storage import LocalStorage, OverLimit, new_key


def test_put_stream_hashes_and_is_readable(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = new_key("teachers")
    chunks = [b"abc" * 1000, b"", b"xyz"]
    result = storage.put_stream(key, iter(chunks))
    data = b"".join(chunks)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size_bytes == len(data) == storage.size(key)
    with storage.open(key) as fh:
        assert fh.read() == data
    assert b"".join(storage.read_range(key, 2, 10)) == data[2:11]


def test_too_large_leaves_nothing_behind(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = new_key("teachers")
    with pytest.raises(OverLimit):
        storage.put_stream(key, iter([b"x" * 600, b"x" * 600]), max_bytes=1000)
    assert not storage.exists(key)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    for bad in ("../outside", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            storage.put_stream(bad, iter([b"x"]))


def test_generated_keys_are_unique_and_never_user_names() -> None:
    keys = {new_key("datasets") for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("datasets/") and ".." not in k for k in keys)


def test_delete_prefix_removes_the_folder_and_nothing_beside_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for name in ("a", "sub/b", "c"):
        storage.put_stream(f"checkpoints/job_1/{name}", iter([b"x"]))
    storage.put_stream("checkpoints/job_10/keep", iter([b"x"]))
    assert storage.delete_prefix("checkpoints/job_1") == 3
    assert storage.exists("checkpoints/job_10/keep")
    assert not (tmp_path / "checkpoints" / "job_1").exists()
    assert storage.delete_prefix("checkpoints/job_1") == 0
    with pytest.raises(ValueError):
        storage.delete_prefix("../outside")
