"""The sandboxed child started ahead of its request (the gpu worker's spare)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import Settings
from worker import pipeline
from worker.sandbox import Child


def _dataset(tmp_path: Path, child: Child) -> dict[str, Any]:
    """A request for ``child``: the file is staged into its sandbox's read-only inputs."""
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((5, 3), dtype=np.float32))
    return {"op": "inspect_dataset", "path": child.stage("x", path), "format": "npz"}


def _result(child: Child) -> dict[str, Any]:
    try:
        for event in child.lines():
            if event.get("event") in ("result", "error"):
                return event
        raise AssertionError(child.crash_message())
    finally:
        child.close()


def test_a_preloaded_child_takes_its_request_later(tmp_path: Path) -> None:
    os.environ["STILLHOUSE_SECRET_FOR_TEST"] = "x"
    try:
        child = Child(
            None, workdir=tmp_path / "c", threads=1, memory_bytes=0, cpu_seconds=120, preload=True
        )
    finally:
        del os.environ["STILLHOUSE_SECRET_FOR_TEST"]
    environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"STILLHOUSE_CHILD_PRELOAD=1" in environ
    assert not any(e.startswith(b"STILLHOUSE_SECRET") for e in environ)
    child.send(_dataset(tmp_path, child))
    result = _result(child)
    assert result["event"] == "result", result
    assert result["num_samples"] == 5


@pytest.fixture(autouse=True)
def _no_spare_left() -> Iterator[None]:
    pipeline._spare = None
    yield
    if pipeline._spare is not None:
        pipeline._spare.close()
        pipeline._spare = None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, torch_threads=1, sandbox_cpu_seconds=120)


def test_a_live_spare_is_handed_the_request(settings: Settings, tmp_path: Path) -> None:
    pipeline.start_spare(settings)
    spare = pipeline._spare
    assert spare is not None and spare.alive()
    child = pipeline._take_spare(settings)
    assert child is spare and pipeline._spare is None
    child.send(_dataset(tmp_path, child))
    assert _result(child)["event"] == "result"


def test_a_spare_adopts_the_job_folder_and_keeps_its_checkpoints(
    settings: Settings, tmp_path: Path
) -> None:
    """The spare started in a folder of its own; the job's folder (checkpoints of an earlier
    attempt) becomes its folder, and the running sandbox sees it there."""
    jobdir = tmp_path / "work" / "job_1"
    (jobdir / "engine").mkdir(parents=True)
    (jobdir / "engine" / "checkpoint.json").write_text("{}")
    pipeline.start_spare(settings)
    child = pipeline._take_spare(settings)
    assert child is not None
    child.adopt(jobdir)
    assert child.workdir == jobdir and (jobdir / "engine" / "checkpoint.json").exists()
    assert not list((tmp_path / "work").glob(".spare-*"))
    assert child.inside(jobdir / "engine") == "/job/engine"
    assert child.outside("/job/engine/export/student.onnx") == jobdir / "engine/export/student.onnx"
    child.send(_dataset(tmp_path, child))
    assert _result(child)["num_samples"] == 5
    assert (jobdir / "inputs" / "x").exists()


def test_a_dead_spare_is_dropped_and_its_folder_removed(settings: Settings, tmp_path: Path) -> None:
    pipeline.start_spare(settings)
    spare = pipeline._spare
    assert spare is not None
    spare.kill()  # as if it had died on its own
    assert pipeline._take_spare(settings) is None
    assert not spare.workdir.exists()


def test_a_spare_with_other_limits_is_not_used(settings: Settings, tmp_path: Path) -> None:
    pipeline.start_spare(settings)
    other = settings.model_copy(update={"torch_threads": 2})
    assert pipeline._take_spare(other) is None


def test_spares_can_be_turned_off(tmp_path: Path) -> None:
    pipeline._spare = None
    pipeline.start_spare(Settings(data_dir=tmp_path, spare_child=False))
    assert pipeline._spare is None


def test_a_spare_that_cannot_start_is_logged_not_raised(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> Child:
        raise OSError("fork failed")

    monkeypatch.setattr(pipeline, "Child", refuse)
    pipeline.start_spare(settings)  # must not raise: it runs in a job's finally
    assert pipeline._spare is None
    assert "could not start a spare" in caplog.text


def test_a_dead_spare_is_replaced_and_its_folder_removed(settings: Settings) -> None:
    pipeline.start_spare(settings)
    dead = pipeline._spare
    assert dead is not None
    dead.kill()
    pipeline.start_spare(settings)
    assert pipeline._spare is not None and pipeline._spare is not dead
    assert pipeline._spare.alive() and not dead.workdir.exists()
