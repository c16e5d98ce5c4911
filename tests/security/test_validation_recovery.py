"""A validation worker killed mid-validation cannot leave an upload ``validating``.

Replayed as the audit did, on the embedded broker (which drops a message as it hands it
out): a real validation worker is killed with SIGKILL, all its processes at once, while its
sandbox inspects a teacher; another worker, with the periodic sweep, starts. The upload's
lease runs out, the sweep publishes it again and the new worker validates it: ``ready``
within tens of seconds (the tests' leases are 4 s and the sweep runs every 2 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEV_KEY, ROOT, stop_process, wait_for
from tests.factories import teacher_pt2_bytes
from tests.security.servers import ApiServer


def _worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A validation worker in a session of its own: its process group is all of it."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "validate"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*argv, "-c", "1", "-n", f"{log.stem}@%h", "-l", "INFO", *extra],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


def _inspecting(pid: int) -> bool:
    """Whether the worker ``pid`` has a sandboxed child at work."""
    for child in _descendants(pid):
        try:
            if b"engine.child" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.fixture
def embedded(db: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], httpx.Client]]:
    """The API on the embedded (filesystem) broker and this session's Postgres."""
    folder = tmp_path / "data"
    folder.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STILLHOUSE_DATA_DIR": str(folder),
        "STILLHOUSE_BROKER_URL": "",
        "STILLHOUSE_OUTBOX_DRAIN_SECONDS": "1",
    }
    api = ApiServer(env, tmp_path / "api.log")
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    try:
        with httpx.Client(base_url=api.url, headers=headers, timeout=30, trust_env=False) as http:
            yield env, http
    finally:
        api.stop()


@pytest.mark.slow  # a real teacher is built, and two workers start
def test_a_validation_worker_killed_mid_validation_leaves_no_upload_validating(
    embedded: tuple[dict[str, str], httpx.Client], tmp_path: Path
) -> None:
    env, http = embedded
    victim = _worker(env, tmp_path / "victim.log")
    try:
        resp = http.post("/v1/teachers", files={"file": ("t.pt2", teacher_pt2_bytes())})
        assert resp.status_code == 201, resp.text
        teacher_id = resp.json()["id"]
        wait_for(lambda: _inspecting(victim.pid), timeout=120, interval=0.05)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
    assert http.get(f"/v1/teachers/{teacher_id}").json()["status"] == "validating"

    killed = time.monotonic()
    rescuer = _worker(env, tmp_path / "rescuer.log", "-B", "-s", str(tmp_path / "beat"))
    try:

        def settled() -> dict[str, object] | None:
            obj = dict(http.get(f"/v1/teachers/{teacher_id}").json())
            return obj if obj["status"] != "validating" else None

        teacher = wait_for(settled, timeout=90, interval=0.3)
        print(f"settled {time.monotonic() - killed:.1f} s after the kill")
    finally:
        stop_process(rescuer)
    assert teacher["status"] == "ready", teacher["error"]
    assert teacher["num_classes"] == 10
