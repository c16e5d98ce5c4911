"""Request heads are capped where the API is served (``python -m api.serve``, as ``stillhouse
run``, Docker and Compose run it).

The audit sent one request with a 64 MiB header (no key needed): ``/healthz`` waited 4.6 s
for other clients; at 256 MiB, 118 s, and the API grew from 513 MB to 1,037 MB. A head past
``STILLHOUSE_MAX_HEADER_BYTES`` or with more than ``STILLHOUSE_MAX_HEADER_COUNT`` fields is
now answered 431 (or the connection closed) as soon as the cap is passed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import get_settings
from tests.security.servers import ApiServer

MiB = 1024**2


@pytest.fixture(scope="module")
def server(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    api = ApiServer({}, tmp_path_factory.mktemp("heads") / "api.log")
    try:
        yield api
    finally:
        api.stop()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_head(port: int, head: bytes, *, stream_bytes: int = 0) -> tuple[bytes, float]:
    """Send ``head`` (then ``stream_bytes`` more of one header's value, never ending it);
    returns what came back (b"" for a closed connection) and the seconds until then."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        with contextlib.suppress(OSError):  # the server may close while we still send
            conn.sendall(head)
            block = b"a" * MiB
            for _ in range(stream_bytes // MiB):
                conn.sendall(block)
        try:
            answer = conn.recv(65536)
        except OSError:
            answer = b""
    return answer, time.monotonic() - start


def test_a_64_mib_header_is_refused_at_once_and_costs_no_memory(server: ApiServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    httpx.get(server.url + "/healthz", trust_env=False)  # warm
    rss_before = _rss_bytes(server.proc.pid)
    slowest_healthz = [0.0]
    done = threading.Event()

    def poll_healthz() -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not done.is_set():
                start = time.monotonic()
                assert client.get(server.url + "/healthz").status_code == 200
                slowest_healthz[0] = max(slowest_healthz[0], time.monotonic() - start)
                time.sleep(0.01)

    poller = threading.Thread(target=poll_healthz, daemon=True)
    poller.start()
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
        answer, seconds = _send_head(port, head, stream_bytes=64 * MiB)
    finally:
        done.set()
        poller.join(30)
    rss_after = _rss_bytes(server.proc.pid)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert seconds < 1.0, f"refused after {seconds:.2f} s"
    assert slowest_healthz[0] < 1.0, f"/healthz waited {slowest_healthz[0]:.2f} s"
    assert rss_after - rss_before < 16 * MiB, (rss_before, rss_after)


def test_a_head_just_over_the_cap_gets_431(server: ApiServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    cap = get_settings().max_header_bytes
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * cap + b"\r\n\r\n"
    answer, _ = _send_head(port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer and b"connection: close" in answer


def test_too_many_header_fields_get_431(server: ApiServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    count = get_settings().max_header_count
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(count + 1))
    answer, _ = _send_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"header fields" in answer


def test_heads_within_the_caps_pass_on_a_kept_alive_connection(server: ApiServer) -> None:
    """The count restarts with each request: two heads of 3/4 of the cap on one connection."""
    settings = get_settings()
    value = "a" * (settings.max_header_bytes * 3 // 4)
    many = {f"X-F{i}": "1" for i in range(settings.max_header_count - 10)}
    with httpx.Client(trust_env=False, timeout=10) as client:
        for headers in ({"X-Big": value}, {"X-Big": value}, many):
            assert client.get(server.url + "/healthz", headers=headers).status_code == 200
