"""A real API on a free port (uvicorn in a thread of the test process, the test database and
broker), and the `stillhouse` command run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEV_KEY, ROOT, truncate


@pytest.fixture(scope="package")
def api_url(pg_database: str) -> Iterator[str]:
    import uvicorn

    from api.app import create_app
    from api.serve import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(create_app(), log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def cli_env(url: str | None = None, key: str | None = DEV_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", NO_COLOR="1")
    if url is not None:
        env["STILLHOUSE_URL"] = url
    if key is not None:
        env["STILLHOUSE_API_KEY"] = key
    env.update(extra)
    return env


def stillhouse(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`stillhouse ARGS...` in a subprocess; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def empty_tenant_data() -> None:
    """Everything but tenants and keys: the running API keeps its bootstrap key (and the
    tenant id it has cached for it)."""
    from models import Base

    keep = {"tenants", "api_keys"}
    truncate(only=tuple(t.name for t in Base.metadata.sorted_tables if t.name not in keep))
