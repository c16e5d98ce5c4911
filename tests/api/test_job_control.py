"""Job control with real workers (Postgres + Redis): a cancel reaches the training loop within
2 s, a killed engine child is retried like a lost worker, and SIGTERM hands the running job
back at a checkpoint for the next worker to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _body, _finished
from tests.conftest import DATA_DIR, start_worker, stop_process, wait_for

LONG = {"training": {"epochs": 40, "batch_size": 32, "seed": 7}}
# The production heartbeat (the tests' default is 1 s): a cancel must not wait for it.
SLOW_HEARTBEAT = {"STILLHOUSE_HEARTBEAT_SECONDS": "10", "STILLHOUSE_LEASE_SECONDS": "60"}


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    """This module shares its uploads across tests (see tests/api/conftest.py)."""
    return jobs_client


def _in_training(client: TestClient, job_id: str, epoch: int) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        now = client.get(f"/v1/jobs/{job_id}").json()
        return now if now["stage"] == "training" and now["epoch"] >= epoch else None

    return dict(wait_for(reached, timeout=180, interval=0.1))


def _events(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    events, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            f"/v1/jobs/{job_id}/events", params=params, headers={"Accept": "application/json"}
        ).json()
        events += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return events


def _checkpoint(job_id: str) -> Path:
    return DATA_DIR / "work" / job_id / "engine" / "checkpoints" / "checkpoint.json"


@pytest.mark.slow
def test_cancel_stops_the_training_loop_within_two_seconds(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    gpu = start_worker("gpu", "gpu-cancel", "worker-gpu-cancel.log", env=SLOW_HEARTBEAT)
    try:
        job = client.post("/v1/jobs", json=_body(inputs, training={"epochs": 500})).json()
        _in_training(client, job["id"], epoch=1)
        asked = time.time()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        ended = _finished(client, job["id"], timeout=30)
        seen_ended = time.time() - asked
    finally:
        stop_process(gpu)
    assert ended["status"] == "cancelled"
    # The loop checkpoints every 5 steps (tests' setting) and once more where it stops: the
    # last write of the checkpoint is when training stopped.
    stopped = _checkpoint(job["id"]).stat().st_mtime - asked
    print(f"cancel: training stopped {stopped:.2f} s, job cancelled {seen_ended:.2f} s after")
    assert stopped <= 2.0
    assert seen_ended <= 5.0  # the test polls every 0.5 s


def _engine_children(root: int) -> list[int]:
    """Pids of the engine processes below process ``root`` (the worker this test started)."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        proc = Path(f"/proc/{pid}")
        try:
            for task in (proc / "task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        # The engine itself: not bwrap, setpriv or the reaper that run it (they name it too).
        wrapper = cmdline[0].endswith((b"bwrap", b"setpriv")) or b"worker.reaper" in cmdline
        if b"engine.child" in cmdline and not wrapper:
            found.append(pid)
    return found


@pytest.mark.slow
def test_a_killed_engine_child_is_retried_like_a_lost_worker(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    # Without spares (a running job's worker starts the next job's child ahead): the one
    # engine child found is the job's.
    gpu = start_worker(
        "gpu", "gpu-child-lost", "worker-gpu-child-lost.log", env={"STILLHOUSE_SPARE_CHILD": "0"}
    )
    try:
        job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()
        _in_training(client, job["id"], epoch=3)
        (child,) = _engine_children(gpu.pid)
        os.kill(child, signal.SIGKILL)
        finished = _finished(client, job["id"], timeout=300)
        assert gpu.poll() is None
    finally:
        stop_process(gpu)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempt"] == 2
    events = _events(client, job["id"])
    assert [e["attempt"] for e in events if e["kind"] == "started"] == [1, 2]
    (resumed,) = [e for e in events if e["kind"] == "resumed"]
    assert resumed["attempt"] == 2 and resumed["data"]["step"] > 0


@pytest.mark.slow
def test_sigterm_checkpoints_hands_the_job_back_and_the_next_worker_resumes_there(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    first = start_worker("gpu", "gpu-stopped", "worker-gpu-stopped.log")
    job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()
    _in_training(client, job["id"], epoch=3)
    # The job's engine child and, started while it runs, the next job's spare.
    assert len(_engine_children(first.pid)) == 2
    asked = time.monotonic()
    first.terminate()  # a warm shutdown, as `docker stop` asks for
    first.wait(timeout=60)
    print(f"sigterm: the worker handed the job back and exited in {time.monotonic() - asked:.2f} s")
    handed_back = client.get(f"/v1/jobs/{job['id']}").json()
    # Without the hand-back, the warm shutdown would have waited for the job to end.
    assert handed_back["status"] == "queued" and handed_back["attempt"] == 1, handed_back
    stop_step = json.loads(_checkpoint(job["id"]).read_text())["train"]["step"]
    second = start_worker("gpu", "gpu-next", "worker-gpu-next.log")
    try:
        resumed = _finished(client, job["id"], timeout=300)
    finally:
        stop_process(second)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert resumed["attempt"] == 2
    events = _events(client, job["id"])
    (queued,) = [e for e in events if e["kind"] == "queued" and e["attempt"] == 1]
    assert queued["data"] == {"reason": "worker_stopped"}
    last_checkpoint = [e for e in events if e["kind"] == "checkpoint" and e["attempt"] == 1][-1]
    (resume,) = [e for e in events if e["kind"] == "resumed"]
    assert resume["attempt"] == 2 and resume["data"]["step"] == stop_step
    assert last_checkpoint["data"]["step"] == stop_step
