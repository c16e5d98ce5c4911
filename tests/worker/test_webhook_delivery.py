"""The delivery client on its own: signed posts, TLS verified against the URL's host name
while the connection goes to the address the guard checked, redirects not followed."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from bench._harness import free_port
from core.settings import Settings
from core.webhooks import RefusedURL, new_secret
from tests.api.receiver import Receiver
from worker.webhooks import attempt, backoff, post, signed_headers

ALLOWED = Settings(webhook_allow_private=True, webhook_timeout_seconds=10)


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ssl.SSLContext]:
    """A self-signed certificate for the name ``localhost`` only, trusted by this process."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    yield server


def test_https_delivery_verifies_the_url_host_name(certificate: ssl.SSLContext) -> None:
    receiver = Receiver(free_port(), secret=new_secret()).start(tls=certificate)
    try:
        body = json.dumps({"type": "job.failed"}).encode()
        headers = signed_headers(receiver.secret, "msg_1", body)
        url = f"https://localhost:{receiver.port}/hook"
        assert post(url, body, headers, settings=ALLOWED) == 204
        assert [d.valid for d in receiver.deliveries] == [True]
        # The same server by address: its certificate names localhost only, so TLS refuses.
        by_address = f"https://127.0.0.1:{receiver.port}/hook"
        with pytest.raises(ssl.SSLCertVerificationError):
            post(by_address, body, headers, settings=ALLOWED)
    finally:
        receiver.stop()


def test_redirects_are_not_followed() -> None:
    hits: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        outcome = attempt("msg_2", url, new_secret(), {"type": "job.failed"}, ALLOWED)
        assert outcome.status_code == 307 and not outcome.ok and outcome.error == "HTTP 307"
        assert hits == ["/hook"]
    finally:
        server.shutdown()
        server.server_close()


def test_guard_refuses_before_connecting() -> None:
    with pytest.raises(RefusedURL):
        post("http://127.0.0.1:9/", b"{}", {}, settings=Settings(webhook_allow_private=False))


def test_backoff_doubles_up_to_its_cap() -> None:
    settings = Settings(webhook_backoff_seconds=5, webhook_backoff_max_seconds=60)
    assert [backoff(n, settings) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_the_api_offers_exactly_the_events_the_outbox_writes() -> None:
    from typing import get_args

    from api.schemas import JobStatus, WebhookEvent
    from core.webhooks import EVENTS

    assert set(get_args(WebhookEvent)) == set(EVENTS)
    assert {e.removeprefix("job.") for e in EVENTS} == set(JobStatus) - {
        "queued",
        "running",
    }
