"""A checkpoint mirrored through a real S3-API server (moto): pushed tensors first and pointer
last, older tensors removed, pulled by another host's folder, dropped whole at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.s3storage import S3Storage
from core.storage import LocalStorage
from tests.core.test_s3_storage import storage  # noqa: F401 - the fixture (a fresh bucket)
from tests.s3server import s3_endpoint  # noqa: F401 - the fixture
from worker.checkpoint_sync import POINTER, CheckpointMirror, SoftLabelMirror, soft_labels_file


def _checkpoint(folder: Path, step: int) -> bytes:
    """What the engine writes: a tensors file, then the pointer naming it."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{step:09d}.safetensors"
    (folder / name).write_bytes(f"tensors of step {step}".encode())
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink()
    pointer = json.dumps({"tensors_file": name, "train": {"step": step}}).encode()
    (folder / POINTER).write_bytes(pointer)
    return pointer


def test_push_pull_and_drop_through_s3(storage: S3Storage, tmp_path: Path) -> None:  # noqa: F811
    here = CheckpointMirror(storage, "job_1", tmp_path / "host-a")
    assert not here.push()  # no checkpoint yet
    _checkpoint(tmp_path / "host-a", 5)
    assert here.push() and not here.push()  # unchanged: nothing to copy
    pointer = _checkpoint(tmp_path / "host-a", 10)
    assert here.push()
    assert not storage.exists("checkpoints/job_1/checkpoint-000000005.safetensors")

    there = CheckpointMirror(storage, "job_1", tmp_path / "host-b")
    assert there.pull()
    assert (tmp_path / "host-b" / POINTER).read_bytes() == pointer
    tensors = tmp_path / "host-b" / "checkpoint-000000010.safetensors"
    assert tensors.read_bytes() == b"tensors of step 10"
    assert not there.pull()  # this host has one now

    storage.put_stream("checkpoints/job_1/.half-copied", iter([b"x"]))  # a killed host's rest
    there.drop()
    assert not storage.exists("checkpoints/job_1/checkpoint.json")
    assert not storage.exists("checkpoints/job_1/.half-copied")
    assert not CheckpointMirror(storage, "job_1", tmp_path / "host-c").pull()


def test_the_local_store_copies_nothing(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "data")
    mirror = CheckpointMirror(local, "job_1", tmp_path / "work")
    _checkpoint(tmp_path / "work", 5)
    assert not mirror.push() and not mirror.pull()
    mirror.drop()
    assert (tmp_path / "work" / POINTER).exists()


KEY = "ab" * 32


def test_soft_labels_are_copied_once_and_fetched_where_missing(
    storage: S3Storage,  # noqa: F811
    tmp_path: Path,
) -> None:
    here = SoftLabelMirror(storage, tmp_path / "host-a")
    (tmp_path / "host-a").mkdir()
    soft_labels_file(tmp_path / "host-a", KEY).write_bytes(b"logits")
    here.push(KEY)
    assert here.pushing is not None
    here.pushing.join(timeout=30)
    assert storage.exists(f"softlabels/{KEY}.safetensors")

    there = SoftLabelMirror(storage, tmp_path / "host-b")
    assert there.pull(KEY)
    assert soft_labels_file(tmp_path / "host-b", KEY).read_bytes() == b"logits"
    assert not there.pull(KEY)  # this host has them now
    assert not there.pull("cd" * 32)  # nothing stored under that key
    with pytest.raises(ValueError):
        there.pull("../../etc/passwd")
