"""Partial uploads (``.part`` files) never stay behind.

The audit's ``kill -9`` of the API (or a SIGINT of ``make run``) mid-upload left a
78-195 MB ``.part`` file that nothing removed or counted. A client that goes away removes its
partial file at once; one that a killed process left is removed when the API starts. A
partial file that a live process still writes (its lock held) is kept.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEV_KEY, wait_for
from tests.security.servers import ApiServer

BOUNDARY = "partials"
MiB = 1024**2


def _partials(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "files").rglob("*.part"))


def _start_upload(server: ApiServer, data_dir: Path, mib: int = 4) -> socket.socket:
    """A chunked upload that sends ``mib`` MiB of its file and then waits, unfinished."""
    port = int(server.url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn.sendall(
        (
            "POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {DEV_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.npy"\r\n\r\n'
    first = head.encode() + b"\x93NUMPY" + b"\0" * (MiB - 6)
    for block in [first] + [b"\0" * MiB] * (mib - 1):
        conn.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
    wait_for(lambda: _partials(data_dir), timeout=20, interval=0.05)
    return conn


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(pg_database: str, data_dir: Path) -> Iterator[ApiServer]:
    api = ApiServer({"STILLHOUSE_DATA_DIR": str(data_dir)}, data_dir.parent / "api.log")
    try:
        yield api
    finally:
        api.stop()


def test_a_client_that_goes_away_leaves_no_partial_file(server: ApiServer, data_dir: Path) -> None:
    conn = _start_upload(server, data_dir)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # reset, not FIN
    conn.close()
    wait_for(lambda: not _partials(data_dir), timeout=10, interval=0.05)


def test_the_partial_file_of_a_killed_api_is_removed_on_start(
    server: ApiServer, data_dir: Path
) -> None:
    conn = _start_upload(server, data_dir)
    server.proc.kill()  # kill -9: nothing of the API runs to clean up
    server.proc.wait(10)
    conn.close()
    (orphan,) = _partials(data_dir)
    # A partial file another live process is writing: locked, as the storage writer does.
    live = orphan.with_name(".live.part")
    with open(live, "xb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        old = time.time() - 60
        for path in (orphan, live):
            os.utime(path, (old, old))
        restarted = ApiServer({"STILLHOUSE_DATA_DIR": str(data_dir)}, data_dir.parent / "api2.log")
        try:
            assert _partials(data_dir) == [live]
        finally:
            restarted.stop()
