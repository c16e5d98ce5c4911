"""kill -9 of the worker mid-training: a new worker resumes from the last checkpoint and the
job ends with the same student bytes as an uninterrupted run (Postgres + Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.api.conftest import _body, _finished
from tests.conftest import start_worker, stop_process, wait_for

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow

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
@pytest.mark.timeout(600)  # two workers, two jobs: 283 s alone on a loaded 2-core machine
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
        _history_of_two_attempts(client, job["id"], epochs=LONG["training"]["epochs"])
        interrupted_sha = _student_sha(client, job["id"])

        clean = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()
        clean = _finished(client, clean["id"], timeout=300)
        assert clean["status"] == "succeeded" and clean["attempt"] == 1
        assert _student_sha(client, clean["id"]) == interrupted_sha
        # The second job reused the first one's soft labels.
        assert clean["report"]["timings_s"]["soft_labeling"] < 1.0
    finally:
        stop_process(second)


def _history_of_two_attempts(client: TestClient, job_id: str, epochs: int) -> None:
    """Every epoch has exactly one row: attempt 1's rows, then attempt 2's, which begin right
    after them (a kill can fall after a checkpoint but before the worker stored the epochs
    before it: attempt 2 stores those from the checkpoint); the events say where it resumed."""
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert sorted({r["epoch"] for r in rows}) == list(range(1, epochs + 1))
    first = [r["epoch"] for r in rows if r["attempt"] == 1]
    second = [r["epoch"] for r in rows if r["attempt"] == 2]
    # The job row showed epoch 3 in progress: epochs 1 and 2 had finished (their rows come
    # first in the child's output and are written in order).
    assert first == list(range(1, len(first) + 1)) and len(first) >= 2
    assert second == list(range(len(first) + 1, epochs + 1)), (first, second)
    events, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            f"/v1/jobs/{job_id}/events", params=params, headers={"Accept": "application/json"}
        ).json()
        events += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    started = [e["attempt"] for e in events if e["kind"] == "started"]
    assert started == [1, 2]
    (resumed,) = [e for e in events if e["kind"] == "resumed"]
    # It resumed in the epoch after the last one it found finished (stored by either attempt).
    assert resumed["attempt"] == 2 and resumed["data"]["epoch"] >= len(first)
    # The kill can fall between a checkpoint's write and the worker recording its event:
    # the resume is at the last recorded checkpoint or at a later one.
    recorded = [
        e["data"]["step"] for e in events if e["kind"] == "checkpoint" and e["attempt"] == 1
    ]
    every = get_settings().checkpoint_every_steps
    assert resumed["data"]["step"] >= recorded[-1] and resumed["data"]["step"] % every == 0


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
