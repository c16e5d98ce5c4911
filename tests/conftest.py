"""Shared fixtures. Real Postgres (a fresh database per test session, built by the Alembic
migrations) and real Redis (its own key prefix); tables are emptied after each test.

Everything is lazy: a test that asks for no database fixture touches no server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"stillhouse-test-{RUN_ID}-"))
BASE_PG_URL = os.environ.get(
    "STILLHOUSE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STILLHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DB_NAME = f"stillhouse_t_{RUN_ID}"
PG_URL = BASE_PG_URL.rsplit("/", 1)[0] + "/" + PG_DB_NAME
DEV_KEY = "sh_test_" + secrets.token_hex(16)

# Settings are read once per process: set them before anything imports core.settings.
os.environ.update(
    STILLHOUSE_DATA_DIR=str(DATA_DIR),
    STILLHOUSE_DATABASE_URL=PG_URL,
    STILLHOUSE_BROKER_URL=REDIS_URL,
    STILLHOUSE_BROKER_KEY_PREFIX=f"stillhouse-test-{RUN_ID}:",
    STILLHOUSE_BOOTSTRAP_API_KEY=DEV_KEY,
    STILLHOUSE_TORCH_THREADS="1",
    # Short leases so that a killed worker's job is taken over within seconds.
    STILLHOUSE_LEASE_SECONDS="4",
    STILLHOUSE_HEARTBEAT_SECONDS="1",
    STILLHOUSE_SWEEP_SECONDS="2",
    STILLHOUSE_CHECKPOINT_EVERY_STEPS="5",
    # Webhook receivers in tests listen on 127.0.0.1; their retries come back within seconds.
    STILLHOUSE_WEBHOOK_ALLOW_PRIVATE="true",
    STILLHOUSE_WEBHOOK_BACKOFF_SECONDS="1",
    # Tests poll fast with one key; tests/api/test_ratelimit.py turns the limit on itself, as
    # tests/security/test_auth_failures.py does the limit on failed authentication.
    STILLHOUSE_RATE_LIMIT_PER_SECOND="0",
    STILLHOUSE_AUTH_FAILURES_PER_SECOND="0",
)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh Postgres database for this test session, migrated to head."""
    from bench._harness import fresh_postgres

    with fresh_postgres(BASE_PG_URL, PG_DB_NAME, migrated=True) as url:
        try:
            yield url
        finally:
            from core.db import get_engine

            get_engine().dispose()


def truncate(only: tuple[str, ...] = ()) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from core.db import get_engine
    from models import Base

    tables = [t.name for t in Base.metadata.sorted_tables if not only or t.name in only]
    names = ", ".join(f'"{name}"' for name in tables)
    # A worker's sweep or a live server may be reading two of these tables while TRUNCATE
    # locks them one by one: Postgres then ends one side of the deadlock; when that is the
    # TRUNCATE, it simply runs again.
    for attempt in range(5):
        try:
            with get_engine().begin() as conn:
                conn.execute(text(f"TRUNCATE {names} CASCADE"))
            return
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


@pytest.fixture
def db(pg_database: str) -> Iterator[str]:
    """The migrated Postgres database, emptied after the test."""
    yield pg_database
    truncate()


@pytest.fixture
def session(db: str) -> Iterator[object]:
    from core.db import get_sessionmaker

    s = get_sessionmaker()()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture
def client(db: str) -> Iterator[object]:
    """The real app in-process; the bootstrap key exists (lifespan)."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(), headers={"Authorization": f"Bearer {DEV_KEY}"}) as c:
        yield c


def _celery_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_worker(
    queues: str, name: str, log_name: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(DATA_DIR / log_name, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "-n",
                f"{name}-{RUN_ID}@%h",
                "-l",
                "INFO",
                *extra,
            ],
            cwd=ROOT,
            env={**_celery_env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def worker_process(pg_database: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker for the validate queue, with the periodic sweep (beat) inside."""
    beat = str(DATA_DIR / "celerybeat-schedule")
    proc = start_worker("validate", "validate", "worker-validate.log", "-B", "-s", beat)
    try:
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture
def worker(worker_process: subprocess.Popen[bytes], db: str) -> subprocess.Popen[bytes]:
    assert worker_process.poll() is None, (DATA_DIR / "worker-validate.log").read_text()[-3000:]
    return worker_process


@pytest.fixture
def gpu_worker(worker_process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker for the gpu queue (jobs), stopped after the test."""
    proc = start_worker("gpu", "gpu", "worker-gpu.log")
    try:
        yield proc
    finally:
        stop_process(proc)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(DATA_DIR, ignore_errors=True)
