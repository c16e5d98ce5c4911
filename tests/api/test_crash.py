"""kill -9 of the worker mid-training: a new worker resumes from the last checkpoint and the
job ends with the same student bytes as an uninterrupted run (Postgres + Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _body, _finished
from tests.conftest import start_worker, stop_process, wait_for

LONG = {"training": {"epochs": 40, "batch_size": 32, "seed": 7}}


def _student_sha(client: TestClient, job_id: str) -> str:
    resp = client.get(f"/v1/jobs/{job_id}/student", params={"format": "safetensors"})
    assert resp.status_code == 200
    return str(resp.headers["etag"])


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    """This module shares its uploads across tests (see tests/api/conftest.py)."""
    return jobs_client


@pytest.mark.slow
def test_killed_worker_job_resumes_with_identical_student(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    first = start_worker("gpu", "gpu-doomed", "worker-gpu-doomed.log")
    job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()

    def mid_training() -> dict[str, Any] | None:
        now = client.get(f"/v1/jobs/{job['id']}").json()
        return now if now["stage"] == "training" and now["epoch"] >= 3 else None

    before = wait_for(mid_training, timeout=180, interval=0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = start_worker("gpu", "gpu-rescue", "worker-gpu-rescue.log")
    try:
        resumed = _finished(client, job["id"], timeout=300)
        assert resumed["status"] == "succeeded", resumed["error"]
        assert resumed["attempt"] == 2
        assert before["attempt"] == 1
        interrupted_sha = _student_sha(client, job["id"])

        clean = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()
        clean = _finished(client, clean["id"], timeout=300)
        assert clean["status"] == "succeeded" and clean["attempt"] == 1
        assert _student_sha(client, clean["id"]) == interrupted_sha
        # The second job reused the first one's soft labels.
        assert clean["report"]["timings_s"]["soft_labeling"] < 1.0
    finally:
        stop_process(second)


def test_job_past_its_time_limit_fails_with_a_reason(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    limited = start_worker(
        "gpu",
        "gpu-limited",
        "worker-gpu-limited.log",
        env={"STILLHOUSE_JOB_SOFT_TIME_LIMIT_S": "6"},
    )
    try:
        body = _body(inputs, training={"epochs": 500, "batch_size": 16})
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        job = _finished(client, resp.json()["id"], timeout=120)
    finally:
        stop_process(limited)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "time_limit"
    assert "6 s" in job["error"]["message"]


def _sandboxed_children(root: int) -> list[int]:
    """Pids of the engine children below process ``root`` (ours only: found by walking
    the tree from the worker this test started)."""
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
        if not cmdline[0].endswith(b"bwrap") and b"worker.distill.child" in cmdline:
            found.append(pid)
    return found


def test_a_killed_sandbox_child_is_retried_like_a_lost_worker(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    gpu = start_worker("gpu", "gpu-child-lost", "worker-gpu-child-lost.log")
    try:
        job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()

        def mid_training() -> dict[str, Any] | None:
            now = client.get(f"/v1/jobs/{job['id']}").json()
            return now if now["stage"] == "training" and now["epoch"] >= 3 else None

        wait_for(mid_training, timeout=180, interval=0.2)
        # The job's child: the spare started with the worker, or a cold one (the newest).
        children = wait_for(lambda: _sandboxed_children(gpu.pid), timeout=30)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        finished = _finished(client, job["id"], timeout=300)
        assert finished["status"] == "succeeded", finished["error"]
        assert finished["attempt"] == 2
        assert gpu.poll() is None
    finally:
        stop_process(gpu)


def test_sigterm_checkpoints_hands_the_job_back_and_the_next_worker_resumes(
    client: TestClient, inputs: dict[str, str], worker_process: subprocess.Popen[bytes]
) -> None:
    from tests.conftest import DATA_DIR

    first = start_worker("gpu", "gpu-stopped", "worker-gpu-stopped.log")
    job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()

    def mid_training() -> dict[str, Any] | None:
        now = client.get(f"/v1/jobs/{job['id']}").json()
        return now if now["stage"] == "training" and now["epoch"] >= 3 else None

    wait_for(mid_training, timeout=180, interval=0.2)
    first.terminate()  # a warm shutdown, as `docker stop` asks for
    first.wait(timeout=120)
    handed_back = client.get(f"/v1/jobs/{job['id']}").json()
    # Without the hand-back, the warm shutdown would have waited for the job to succeed.
    assert handed_back["status"] == "queued" and handed_back["attempt"] == 1, handed_back
    assert list((DATA_DIR / "work" / job["id"]).rglob("checkpoint.json"))
    second = start_worker("gpu", "gpu-next", "worker-gpu-next.log")
    try:
        resumed = _finished(client, job["id"], timeout=300)
        assert resumed["status"] == "succeeded", resumed["error"]
        assert resumed["attempt"] == 2
    finally:
        stop_process(second)
