"""The sandboxed child started ahead of its request (the gpu and validate workers' spares)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.contracts import (
    AnyEvent,
    DatasetInfo,
    ErrorEvent,
    InspectDatasetRequest,
    InspectTeacherRequest,
    ProgressEvent,
    parse_event,
)
from core.enums import Stage
from core.errors import ErrorCode
from core.settings import Settings
from tests.factories import save_pt2, train_mlp_teacher
from worker import bwrap, pipeline, validation
from worker import spare as spare_module
from worker.sandbox import Child, SandboxError, run_once


def _dataset(tmp_path: Path) -> InspectDatasetRequest:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((5, 3), dtype=np.float32))
    return InspectDatasetRequest(path=str(path), format="npz")


def _result(child: Child) -> AnyEvent:
    try:
        for event in child.lines():
            if event.event in ("dataset", "error"):
                return event
        raise AssertionError(child.crash_message())
    finally:
        child.close()


@pytest.mark.slow
def test_a_preloaded_child_takes_its_request_later(tmp_path: Path) -> None:
    os.environ["STILLHOUSE_SECRET_FOR_TEST"] = "x"
    try:
        child = Child(
            None, workdir=tmp_path / "c", threads=1, memory_bytes=0, cpu_seconds=120, preload="job"
        )
    finally:
        del os.environ["STILLHOUSE_SECRET_FOR_TEST"]
    environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"STILLHOUSE_CHILD_PRELOAD=job" in environ
    assert not any(e.startswith(b"STILLHOUSE_SECRET") for e in environ)
    child.send(_dataset(tmp_path))
    result = _result(child)
    assert isinstance(result, DatasetInfo), result
    assert result.num_samples == 5


@pytest.fixture(autouse=True)
def _no_spare_left() -> Iterator[None]:
    pipeline.SPARE.child = None
    yield
    if pipeline.SPARE.child is not None:
        pipeline.SPARE.child.close()
        pipeline.SPARE.child = None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, torch_threads=1, sandbox_cpu_seconds=120)


@pytest.mark.slow
def test_a_live_spare_is_handed_the_request(settings: Settings, tmp_path: Path) -> None:
    pipeline.SPARE.start(settings)
    spare = pipeline.SPARE.child
    assert spare is not None and spare.alive()
    child = pipeline.SPARE.take(settings, _dataset(tmp_path), tmp_path / "job")
    assert child is spare and pipeline.SPARE.child is None
    assert isinstance(_result(child), DatasetInfo)


def test_a_dead_spare_is_dropped_and_its_folder_removed(settings: Settings, tmp_path: Path) -> None:
    pipeline.SPARE.start(settings)
    spare = pipeline.SPARE.child
    assert spare is not None
    spare.kill()  # as if it had died on its own
    assert pipeline.SPARE.take(settings, _dataset(tmp_path), tmp_path / "job") is None
    assert not spare.workdir.exists()


def test_a_spare_with_other_limits_is_not_used(settings: Settings, tmp_path: Path) -> None:
    pipeline.SPARE.start(settings)
    other = settings.model_copy(update={"torch_threads": 2})
    assert pipeline.SPARE.take(other, _dataset(tmp_path), tmp_path / "job") is None


def test_spares_can_be_turned_off(tmp_path: Path) -> None:
    pipeline.SPARE.child = None
    pipeline.SPARE.start(Settings(data_dir=tmp_path, spare_child=False))
    assert pipeline.SPARE.child is None


def test_a_spare_that_cannot_start_is_logged_not_raised(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> Child:
        raise OSError("fork failed")

    monkeypatch.setattr(spare_module, "Child", refuse)
    pipeline.SPARE.start(settings)  # must not raise: it runs in a job's finally
    assert pipeline.SPARE.child is None
    assert "could not start a spare" in caplog.text


def test_a_dead_spare_is_replaced_and_its_folder_removed(settings: Settings) -> None:
    pipeline.SPARE.start(settings)
    dead = pipeline.SPARE.child
    assert dead is not None
    dead.kill()
    pipeline.SPARE.start(settings)
    assert pipeline.SPARE.child is not None and pipeline.SPARE.child is not dead
    assert pipeline.SPARE.child.alive() and not dead.workdir.exists()


def test_library_output_cannot_corrupt_the_event_channel(tmp_path: Path) -> None:
    """Whatever the engine's libraries print goes to stderr; stdout carries events only."""
    code = (
        "from engine.child import _private_channel\n"
        "from core.contracts import ErrorEvent\n"
        "channel = _private_channel()\n"
        "print('a library talking')\n"
        "import os; os.write(1, b'native noise\\n')\n"
        "channel.emit(ErrorEvent(code='x', message='y'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(pipeline.__file__).parent.parent)},
        check=True,
    )
    assert [parse_event(line) for line in done.stdout.splitlines()] == [
        ErrorEvent(code="x", message="y")
    ]
    assert "a library talking" in done.stderr and "native noise" in done.stderr


def test_a_foreign_line_ends_the_stream_as_an_error(tmp_path: Path) -> None:
    progress = ProgressEvent(stage=Stage.TRAINING, progress=0.5, epochs=2)
    child = Child.__new__(Child)  # only its output is under test: a real process writes it
    child.proc = subprocess.Popen(
        ["printf", "%s\\n", progress.model_dump_json(), '{"event": "result"}', "unseen"],
        stdout=subprocess.PIPE,
        text=True,
    )
    with child.proc:
        events = list(child.lines())
    assert events[0] == progress
    assert isinstance(events[1], ErrorEvent) and events[1].code == "bad_child_output"
    assert len(events) == 2


def test_without_bwrap_nothing_runs_unless_the_operator_opts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    bwrap._probe.cache_clear()
    limits = {"memory_bytes": 0, "cpu_seconds": 120, "timeout_s": 120}
    try:
        with pytest.raises(SandboxError) as caught:
            run_once(_dataset(tmp_path), settings=Settings(data_dir=tmp_path), **limits)
        assert caught.value.code == ErrorCode.SANDBOX_UNAVAILABLE
        assert "STILLHOUSE_SANDBOX=none" in caught.value.message
        unsandboxed = Settings(data_dir=tmp_path, sandbox="none")
        assert isinstance(run_once(_dataset(tmp_path), settings=unsandboxed, **limits), DatasetInfo)
    finally:
        bwrap._probe.cache_clear()


@pytest.mark.slow
def test_a_spare_adopts_the_jobs_folder_and_its_content(settings: Settings, tmp_path: Path) -> None:
    pipeline.SPARE.start(settings)
    spare = pipeline.SPARE.child
    assert spare is not None
    jobdir = tmp_path / "work" / "job-1"
    (jobdir / "engine" / "checkpoints").mkdir(parents=True)
    (jobdir / "engine" / "checkpoints" / "last.pt").write_bytes(b"an earlier attempt's")
    child = pipeline.SPARE.take(settings, _dataset(tmp_path), jobdir)
    assert child is spare and child.workdir == jobdir
    assert (jobdir / "engine" / "checkpoints" / "last.pt").read_bytes() == b"an earlier attempt's"
    assert sorted(p.name for p in (jobdir / "inputs").iterdir()) == ["upload.npz"]
    assert isinstance(_result(child), DatasetInfo)


@pytest.mark.slow
def test_a_spare_that_dies_after_adopting_leaves_the_jobs_checkpoints(
    settings: Settings, tmp_path: Path
) -> None:
    pipeline.SPARE.start(settings)
    spare = pipeline.SPARE.child
    assert spare is not None
    jobdir = tmp_path / "work" / "job-2"
    (jobdir / "engine").mkdir(parents=True)
    (jobdir / "engine" / "last.pt").write_bytes(b"checkpoint")
    spare.adopt(jobdir)
    spare.kill()  # as if it had died between adopting and taking the request
    pipeline.SPARE.child = spare
    assert pipeline.SPARE.take(settings, _dataset(tmp_path), jobdir) is None
    assert (jobdir / "engine" / "last.pt").read_bytes() == b"checkpoint"


def test_tmp_is_the_jobs_folder_unless_a_checkout_under_tmp_is_mounted_there() -> None:
    """A project checked out under /tmp (CI's clean clones) has its code mounted below
    /tmp: the sandbox keeps /tmp as its own folder then (bwrap cannot symlink over it)."""
    assert bwrap._tmp(["--ro-bind", "/usr", "/usr"]) == ["--symlink", "/job/tmp", "/tmp"]
    assert bwrap._tmp(["--perms", "1777", "--dir", "/tmp", "--ro-bind", "/tmp/ci", "/tmp/ci"]) == []


def _tokens_folder(cache: Path, name: str, done: bool) -> Path:
    folder = cache / name
    folder.mkdir(parents=True)
    np.save(folder / "input_ids.npy", np.arange(12, dtype=np.int64).reshape(3, 4))
    if done:
        (folder / "done.json").write_text('{"max_length": 4}')
    return folder


def test_tokenized_text_joins_the_cache_folder_and_the_next_child_maps_it(tmp_path: Path) -> None:
    """A job's finished token folder is kept in the cache folder (the scope of its tenant,
    teachers and dataset); the next child gets links to the same files, nothing copied, so
    it finds them tokenized. Unfinished folders and links the child made are never kept."""
    scope = tmp_path / "scope"
    first = Child(None, workdir=tmp_path / "a", threads=1, memory_bytes=0, cpu_seconds=60)
    try:
        cache = first.outside(first._link_cache(scope))
        _tokens_folder(cache, "tokens-done", done=True)
        _tokens_folder(cache, "tokens-half", done=False)
        (cache / "tokens-done" / "stolen").symlink_to("/etc/hostname")
    finally:
        first.close()
    assert sorted(p.name for p in scope.iterdir()) == ["tokens-done"]
    kept = scope / "tokens-done"
    assert sorted(p.name for p in kept.iterdir()) == ["done.json", "input_ids.npy"]
    second = Child(None, workdir=tmp_path / "b", threads=1, memory_bytes=0, cpu_seconds=60)
    try:
        linked = second.outside(second._link_cache(scope)) / "tokens-done" / "input_ids.npy"
        assert linked.stat().st_ino == (kept / "input_ids.npy").stat().st_ino
        np.testing.assert_array_equal(np.load(linked), np.arange(12).reshape(3, 4))
    finally:
        second.close()
    assert sorted(p.name for p in scope.iterdir()) == ["tokens-done"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["teacher", "dataset"])
def test_a_validation_takes_its_spare_and_leaves_a_new_one(
    settings: Settings, tmp_path: Path, kind: str
) -> None:
    """The validate worker's spares (worker/validation.py): the upload is inspected by the
    child started ahead, which then ends with its folder, and a fresh spare waits for the
    next upload."""
    spare = validation.SPARES[kind]
    spare.start(settings)
    first = spare.child
    assert first is not None and first.alive()
    environ = Path(f"/proc/{first.proc.pid}/environ").read_bytes().split(b"\0")
    assert f"STILLHOUSE_CHILD_PRELOAD={kind}".encode() in environ
    if kind == "teacher":
        path = save_pt2(train_mlp_teacher(hidden=8, epochs=1), tmp_path / "t.pt2")
        request: Any = InspectTeacherRequest(path=str(path), format="torch_export")
    else:
        request = _dataset(tmp_path)
    try:
        result = validation.inspect_in_sandbox(request, settings, timeout_s=120)
        assert result.event == kind, result
        assert not first.alive() and not first.workdir.exists()
        assert spare.child is not None and spare.child is not first and spare.child.alive()
        assert [p.name for p in (tmp_path / "work").iterdir()] == [spare.child.workdir.name]
    finally:
        if spare.child is not None:
            spare_module.drop(spare.child)
            spare.child = None
