"""A real webhook receiver for tests: http.server on a free port, in a thread, checking each
delivery's Standard Webhooks signature with its own implementation of the scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the secret's
    bytes (base64 after "whsec_"); the header lists "v1,<base64>" signatures."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    mac = hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + body, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    given = [sig.split(",", 1) for sig in headers["webhook-signature"].split(" ")]
    return any(v == "v1" and hmac.compare_digest(s, expected) for v, s in given)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    valid: bool

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    port: int
    secret: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/stillhouse"

    def start(self, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                valid = verify(receiver.secret, headers, body)
                receiver.deliveries.append(Delivery(self.path, headers, body, valid))
                self.send_response(204 if valid else 401)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
