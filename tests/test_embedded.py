"""`stillhouse run` (what `make run` serves): SQLite and the filesystem broker, a supervised
worker that is restarted after kill -9 while its job resumes, and a clean stop on SIGINT."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench._harness import free_port
from stillhouse.client import Client
from tests.conftest import ROOT, wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes

KEY = "sh_embedded_test_key"


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry.name), cmdline))
    return out


@contextlib.contextmanager
def service_process(
    tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`stillhouse run` on a free port with its data folder in ``tmp_path / "var"``."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("STILLHOUSE_DATABASE_URL", "STILLHOUSE_BROKER_URL", "STILLHOUSE_BROKER_KEY_PREFIX")
    }
    env.update(
        STILLHOUSE_DATA_DIR=str(tmp_path / "var"),
        STILLHOUSE_PORT=str(port),
        STILLHOUSE_BOOTSTRAP_API_KEY=KEY,
        PYTHONPATH=str(ROOT),
        **(extra_env or {}),
    )
    log = open(tmp_path / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillhouse.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=120, interval=0.5)
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with service_process(tmp_path) as running:
        yield running


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_embedded_service_survives_a_killed_worker_and_stops_cleanly(
    service: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, url = service
    assert (tmp_path / "var" / "stillhouse.db").exists()
    x, _, xe, ye = digits()
    (tmp_path / "t.pt2").write_bytes(teacher_pt2_bytes())
    (tmp_path / "x.npz").write_bytes(npz_bytes(x))
    (tmp_path / "e.npz").write_bytes(npz_bytes(xe, ye))
    with Client(url, KEY) as client:
        teacher = client.wait_ready("teachers", client.upload_teacher(tmp_path / "t.pt2")["id"])
        transfer = client.wait_ready("datasets", client.upload_dataset(tmp_path / "x.npz")["id"])
        evalset = client.wait_ready("datasets", client.upload_dataset(tmp_path / "e.npz")["id"])
        assert [teacher["status"], transfer["status"], evalset["status"]] == ["ready"] * 3
        job = client.submit(
            {
                "teacher_ids": [teacher["id"]],
                "dataset_id": transfer["id"],
                "eval_dataset_id": evalset["id"],
                "training": {"epochs": 40, "batch_size": 32},
            }
        )
        wait_for(
            lambda: (
                client.job(job["id"])["stage"] == "training" and client.job(job["id"])["epoch"] >= 3
            ),
            timeout=180,
        )
        gpu = [pid for pid, cmd in _children(proc.pid) if "-Q gpu" in cmd]
        assert len(gpu) == 1
        os.kill(gpu[0], signal.SIGKILL)
        finished = client.wait(job["id"], timeout=300)
        assert finished["status"] == "succeeded", finished["error"]
        assert finished["attempt"] == 2
        assert finished["report"]["agreement_top1"] > 0.9
        restarted = [pid for pid, cmd in _children(proc.pid) if "-Q gpu" in cmd]
        assert restarted and restarted != gpu
        out = client.download_student(job["id"], "onnx", tmp_path)
        assert out.stat().st_size > 0

    everything = [pid for pid, _ in _children(proc.pid)]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=40) == 0
    time.sleep(0.5)
    assert [pid for pid in everything if Path(f"/proc/{pid}").exists()] == []
