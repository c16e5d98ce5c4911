"""`stillhouse run` as an operator sees it: the banner's ready-to-paste exports, JSON log
lines tagged with their process and carrying job and tenant ids, no sweep chatter, and the
workers' liveness in /readyz on the embedded broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._harness import free_port
from stillhouse import Client
from tests.conftest import ROOT, wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes

KEY = "sh_run_logs_test_key"


def _readyz(url: str) -> dict[str, Any] | None:
    try:
        resp = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError:
        return None
    return dict(resp.json()) if resp.status_code == 200 else None


def _job(client: Client, folder: Path) -> str:
    x, _, xe, ye = digits()
    (folder / "t.pt2").write_bytes(teacher_pt2_bytes())
    (folder / "x.npz").write_bytes(npz_bytes(x))
    (folder / "e.npz").write_bytes(npz_bytes(xe, ye))
    teacher = client.wait_ready("teachers", client.upload_teacher(folder / "t.pt2").id)
    transfer = client.wait_ready("datasets", client.upload_dataset(folder / "x.npz").id)
    held = client.wait_ready("datasets", client.upload_dataset(folder / "e.npz").id)
    spec = {"teacher_ids": [teacher.id], "dataset_id": transfer.id, "eval_dataset_id": held.id}
    job = client.submit({**spec, "training": {"epochs": 1}})
    done = client.wait(job.id, timeout=300)
    assert done.status == "succeeded", done.error
    return job.id


@pytest.mark.slow
@pytest.mark.timeout(600)  # starts torch-importing workers and runs a job: slow on a busy host
def test_run_logs_json_with_ids_and_shows_live_workers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        STILLHOUSE_DATA_DIR=str(tmp_path / "var"),
        STILLHOUSE_PORT=str(port),
        STILLHOUSE_BOOTSTRAP_API_KEY=KEY,
        STILLHOUSE_LOG_FORMAT="json",
        STILLHOUSE_SWEEP_SECONDS="1",
        STILLHOUSE_HEARTBEAT_SECONDS="1",
        STILLHOUSE_TORCH_THREADS="1",
        STILLHOUSE_SPARE_CHILD="false",
    )
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "run"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = wait_for(
            lambda: (
                (r := _readyz(url)) and {"gpu", "validate"} <= set(r["workers"]["queues"]) and r
            ),
            timeout=180,
            interval=0.5,
        )
        assert ready["workers"]["status"] == "ok"
        with Client(url, KEY) as client:
            job_id = _job(client, tmp_path)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    text = (tmp_path / "run.log").read_text()
    assert f"export STILLHOUSE_URL={url} STILLHOUSE_API_KEY={KEY} STILLHOUSE_DATA_DIR=" in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    chatter = [r for r in records if "requeue_stale" in r["message"] or "sweep" in r["message"]]
    assert chatter == []  # dozens of sweeps ran (one a second), none found anything
    job_lines = [r for r in records if r.get("job_id") == job_id]
    assert {r["service"] for r in job_lines} >= {"worker-gpu"}
    assert all(r.get("tenant_id", "").startswith("ten_") for r in job_lines)
    access = [r for r in records if r["service"] == "api" and r["logger"] == "uvicorn.access"]
    assert any("/v1/jobs" in r["message"] and r.get("tenant_id") for r in access)
    assert not (tmp_path / "var" / "broker" / "workers").exists() or not list(
        (tmp_path / "var" / "broker" / "workers").glob("*.json")
    )  # stopped workers took their heartbeats away


@pytest.mark.slow
@pytest.mark.timeout(400)  # starts two torch-importing workers
def test_the_first_run_ends_its_start_up_output_with_the_new_key(tmp_path: Path) -> None:
    """A first `make run` prints a new key once; no Celery banner pushes it off the screen:
    when the API and both workers are ready, the key and the exports are printed again, last."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        STILLHOUSE_DATA_DIR=str(tmp_path / "var"),
        STILLHOUSE_PORT=str(port),
        STILLHOUSE_TORCH_THREADS="1",
        STILLHOUSE_SPARE_CHILD="false",
        COLUMNS="80",
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "run"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "Stillhouse is ready on" in log_path.read_text(), timeout=300)
        text = log_path.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    key = (tmp_path / "var" / "dev-api-key").read_text().strip()
    assert text.count(key) == 4  # the key line and the exports, at the start and at ready
    lines = text.rstrip("\n").splitlines()
    last = "\n".join(lines[-8:])
    assert f"shown once: {key}" in last and f"STILLHOUSE_API_KEY={key}" in last
    assert "-------------- " not in text and "[queues]" not in text  # no Celery banners
    assert len(lines) < 50, text  # (as root, Celery adds a 9-line warning per worker)


def test_a_taken_port_is_said_at_once_not_restarted_forever(tmp_path: Path) -> None:
    """A second `make run` on a busy port: one line naming STILLHOUSE_PORT, exit 1, nothing
    migrated or printed as if it served (its export line would point at the other one)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            STILLHOUSE_DATA_DIR=str(tmp_path / "var"),
            STILLHOUSE_PORT=str(port),
        )
        env.pop("STILLHOUSE_DATABASE_URL", None)
        done = subprocess.run(
            [sys.executable, "-m", "stillhouse.cli", "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert f"127.0.0.1:{port} is in use" in done.stderr
    assert f"STILLHOUSE_PORT={port + 1}" in done.stderr
    assert "API key" not in done.stdout + done.stderr
    assert not (tmp_path / "var").exists()
