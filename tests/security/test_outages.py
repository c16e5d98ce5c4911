"""Outages, replayed against real servers this module starts on its own ports: the API (a
uvicorn process), Postgres, Redis and a validation worker.

- Postgres stopped: every route answers 503 problem+json with Retry-After (never a 500 or
  text/plain), /readyz names the database, and all is well again once it is back.
- Redis stopped: uploads and jobs are still accepted (201: their rows are committed) and
  their tasks wait in the outbox; once Redis is back the outbox drains, the upload is
  validated and the job's message is on its queue. Nothing stays ``validating``.
- A full disk (a 512 KiB tmpfs in a mount namespace of the API's own): an upload gets 507.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from migrations import upgrade
from tests.conftest import DEV_KEY, start_worker, stop_process, wait_for
from tests.factories import digits, npz_bytes
from tests.security.servers import ApiServer, OwnPostgres, OwnRedis

PROBLEM = "application/problem+json"


@dataclass
class Stack:
    folder: Path
    pg: OwnPostgres
    redis: OwnRedis
    env: dict[str, str]
    api: ApiServer
    http: httpx.Client

    def outbox(self) -> int:
        engine = create_engine(self.pg.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM task_outbox")).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not (OwnPostgres.available() and OwnRedis.available()):
        pytest.skip("needs initdb/pg_ctl and redis-server to start servers of its own")
    folder = Path(tempfile.mkdtemp(prefix="stillhouse-outage-"))
    folder.chmod(0o755)  # the postgres user (when we are root) reaches its folder inside
    pg, redis = OwnPostgres(folder / "pg"), OwnRedis(folder / "redis")
    pg.init()
    pg.start()
    redis.start()
    upgrade(pg.url)
    env = {
        "STILLHOUSE_DATABASE_URL": pg.url,
        "STILLHOUSE_BROKER_URL": redis.url,
        "STILLHOUSE_BROKER_KEY_PREFIX": "",
        "STILLHOUSE_DATA_DIR": str(folder / "data"),
        "STILLHOUSE_BOOTSTRAP_API_KEY": DEV_KEY,
        "STILLHOUSE_OUTBOX_DRAIN_SECONDS": "1",
        "STILLHOUSE_AUTH_CACHE_SECONDS": "0",
    }
    api = ApiServer(env, folder / "api.log")
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    http = httpx.Client(base_url=api.url, headers=headers, timeout=30, trust_env=False)
    try:
        yield Stack(folder, pg, redis, env, api, http)
    finally:
        http.close()
        api.stop()
        redis.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def validator(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    """A real validation worker on this module's Postgres and Redis."""
    proc = start_worker("validate", "outage-validate", "worker-outage.log", env=stack.env)
    try:
        yield proc
    finally:
        stop_process(proc)


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert int(resp.headers["retry-after"]) > 0
    body = resp.json()
    assert body["status"] == 503 and body["type"] == "/problems/service_unavailable"


def test_database_down_is_503_problem_then_recovers(stack: Stack) -> None:
    http = stack.http
    assert http.get("/v1/jobs").status_code == 200
    stack.pg.stop()
    try:
        for method, path, kwargs in [
            ("GET", "/v1/jobs", {}),
            ("GET", "/v1/jobs/job_missing", {}),  # the session-less polling path
            ("GET", "/v1/teachers", {}),
            ("POST", "/v1/jobs", {"json": {"teacher_ids": ["t"], "dataset_id": "d"}}),
            ("POST", "/v1/datasets", {"files": {"file": ("x.npz", npz_bytes(digits()[0][:5]))}}),
        ]:
            _assert_unavailable(http.request(method, path, **kwargs))
        ready = http.get("/readyz")
        _assert_unavailable(ready)
        assert ready.json()["failed"] == ["database"]
    finally:
        stack.pg.start()
    wait_for(lambda: http.get("/v1/jobs").status_code == 200, timeout=30)
    assert http.get("/readyz").status_code == 200


def _upload(http: httpx.Client, kind: str, name: str, data: bytes) -> dict[str, Any]:
    resp = http.post(f"/v1/{kind}", files={"file": (name, data)})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _settled(http: httpx.Client, kind: str, obj_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = http.get(f"/v1/{kind}/{obj_id}").json()
        return obj if obj["status"] != "validating" else None

    return dict(wait_for(done, timeout=120, interval=0.3))


@pytest.mark.slow  # a real teacher is built and validated first
def test_broker_down_accepts_and_publishes_later(
    stack: Stack, validator: subprocess.Popen[bytes]
) -> None:
    import redis as redis_client

    from tests.factories import teacher_pt2_bytes

    http = stack.http
    x, _, _, _ = digits()
    teacher = _upload(http, "teachers", "t.pt2", teacher_pt2_bytes())
    transfer = _upload(http, "datasets", "transfer.npz", npz_bytes(x))
    assert _settled(http, "teachers", teacher["id"])["status"] == "ready"
    assert _settled(http, "datasets", transfer["id"])["status"] == "ready"
    assert stack.outbox() == 0

    stack.redis.stop()
    try:
        late = _upload(http, "datasets", "late.npz", npz_bytes(x[:100]))
        body = {"teacher_ids": [teacher["id"]], "dataset_id": transfer["id"]}
        job = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "outage-1"})
        assert job.status_code == 201, job.text
        assert http.get("/readyz").json()["failed"] == ["broker"]
        assert stack.outbox() == 2
        # A client that retries gets its job, not a second one.
        again = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "outage-1"})
        assert again.status_code == 200 and again.json()["id"] == job.json()["id"]
    finally:
        stack.redis.start()

    assert _settled(http, "datasets", late["id"])["status"] == "ready"
    wait_for(lambda: stack.outbox() == 0, timeout=60)
    queued = redis_client.Redis.from_url(stack.redis.url).lrange("gpu", 0, -1)
    assert any(job.json()["id"].encode() in message for message in queued)
    assert http.get(f"/v1/jobs/{job.json()['id']}").json()["status"] == "queued"


def _unshare_works() -> bool:
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def full_disk_prefix(folder: Path, size: str) -> list[str]:
    """Run the rest of the command with ``folder`` on a tmpfs of ``size`` that only it sees."""
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(folder), size]


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged mount namespaces")
def test_upload_on_a_full_disk_is_507(stack: Stack) -> None:
    data = stack.folder / "tiny-data"
    env = {**stack.env, "STILLHOUSE_DATA_DIR": str(data)}
    api = ApiServer(env, stack.folder / "api-full.log", prefix=full_disk_prefix(data, "512k"))
    try:
        with httpx.Client(base_url=api.url, timeout=30, trust_env=False) as http:
            headers = {"Authorization": f"Bearer {DEV_KEY}"}
            x, _, _, _ = digits()
            big = npz_bytes(x)  # ~270 KiB of float32 three times over: past 512 KiB
            big = big * 3
            resp = http.post("/v1/datasets", files={"file": ("x.npz", big)}, headers=headers)
            assert resp.status_code == 507, resp.text
            assert resp.headers["content-type"].startswith(PROBLEM)
            assert resp.json()["type"] == "/problems/storage_full"
            # The space is given back: a small upload still fits.
            small = http.post(
                "/v1/datasets", files={"file": ("s.npz", npz_bytes(x[:50]))}, headers=headers
            )
            assert small.status_code == 201, small.text
    finally:
        api.stop()


def test_engine_failing_on_a_full_disk_reports_storage_full() -> None:
    """The sandboxed engine's error line for a write that hit a full disk: ``storage_full``
    (it was ``internal: OSError``), also when a library re-raised the OSError as its own."""
    from engine.child import error_event

    fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with a real ENOSPC
    try:
        try:
            try:
                os.write(fd, b"checkpoint")
            except OSError as exc:
                raise RuntimeError("safetensors: failed to write the file") from exc
        except RuntimeError as wrapped:
            event = error_event(wrapped)
    finally:
        os.close(fd)
    assert event.event == "error" and event.code == "storage_full"
    assert "disk is full" in event.message and "safetensors" in event.message
    assert error_event(ValueError("boom")).code == "internal"


def test_hung_broker_does_not_hang_a_request(stack: Stack) -> None:
    """Redis stopped with SIGSTOP: connections stay open and nothing answers on them. The
    upload still answers 201 within the publisher's socket timeouts, and is published once
    Redis runs again."""
    http = stack.http
    assert stack.redis.proc is not None
    stack.redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        hung = _upload(http, "datasets", "hung.npz", npz_bytes(digits()[0][:20]))
        assert time.monotonic() - started < 25
    finally:
        stack.redis.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: stack.outbox() == 0, timeout=60)
    assert hung["status"] == "validating"
