"""A sweep's candidates through the SDK and the CLI: ``candidate=N`` reaches the query, and
without it the query is what it always was (the server's default: the chosen student)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from stillhouse import AsyncClient, Client
from tests.cli.conftest import cli_env, stillhouse
from tests.conftest import DEV_KEY


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a few bytes and keeps each request's query."""

    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        type(self).queries.append(parse_qs(urlsplit(self.path).query))
        body = b"student"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Disposition", 'attachment; filename="s.onnx"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"queries": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_sdk_asks_for_a_candidate_only_when_given_one(
    recorder: tuple[str, type[Recorder]], tmp_path: Path
) -> None:
    url, handler = recorder
    with Client(url, DEV_KEY) as client:
        client.download_student("job_1", "onnx", tmp_path / "a.onnx", candidate=2)
        client.download_student("job_1", "onnx", tmp_path / "b.onnx")

    async def both() -> None:
        async with AsyncClient(url, DEV_KEY) as client:
            await client.download_student("job_1", "onnx", tmp_path / "c.onnx", candidate=0)

    asyncio.run(both())
    assert handler.queries == [
        {"format": ["onnx"], "candidate": ["2"]},
        {"format": ["onnx"]},
        {"format": ["onnx"], "candidate": ["0"]},
    ]
    assert (tmp_path / "a.onnx").read_bytes() == b"student"


def test_the_cli_downloads_a_candidate(
    recorder: tuple[str, type[Recorder]], tmp_path: Path
) -> None:
    url, handler = recorder
    proc = stillhouse(
        "jobs", "download", "job_1", "--candidate", "1", "--out", str(tmp_path), env=cli_env(url)
    )
    assert proc.returncode == 0, proc.stderr
    assert handler.queries == [{"format": ["onnx"], "candidate": ["1"]}]
    assert (tmp_path / "s.onnx").read_bytes() == b"student"
