"""Serve the API: uvicorn, with a cap on each request's head. ``python -m api.serve``.

Every way the API is served (``stillhouse run``, the Docker image, Compose, the tests'
servers) goes through ``main`` or ``uvicorn_config``. uvicorn's httptools protocol has no limit on a
request's head: one request with a 64 MiB header made ``/healthz`` wait 4.6 s for other
clients (httptools joins a header value piece by piece), and 256 MiB grew the API by 500 MB.
``HeadLimitedProtocol`` answers 431 and closes the connection once a head passes
``STILLHOUSE_MAX_HEADER_BYTES`` (counted as it arrives, before it is parsed whole) or holds
more than ``STILLHOUSE_MAX_HEADER_COUNT`` fields.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings

APP = "api.app:create_app"
PROTOCOL = "api.serve:HeadLimitedProtocol"
# On SIGTERM or SIGINT, requests still running after this long are cancelled (an upload then
# removes its partial file); `stillhouse run` kills what is left 15 s after asking.
GRACEFUL_SHUTDOWN_S = 10


class _HeadRefused(Exception):
    """Stops the parser; ``send_400_response`` then answers 431 instead."""


class HeadLimitedProtocol(HttpToolsProtocol):
    """httptools with a cap on the bytes and fields of each request's head. The bytes are
    counted as they arrive, so that at most one read (256 KiB) past the cap is ever parsed,
    and a head that arrived whole is measured once parsed (its fields and the target)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_head_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes and self._refusal is None:
            self._refuse(f"the request's head is larger than {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refusal = f"the request has more than {self.max_header_count} header fields"
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The head parsed whole within one read: its size is known now.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            self._refusal = f"the request's head is larger than {self.max_head_bytes} bytes"
            raise _HeadRefused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _refuse(self, detail: str) -> None:
        self._refusal = detail
        body = (
            '{"type":"about:blank","title":"Request Header Fields Too Large","status":431,'
            f'"detail":"{detail}"}}'
        ).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def uvicorn_config(app: Any = APP, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration with the head limits; ``app`` is the app or its factory's
    import string (then ``factory=True``)."""
    if isinstance(app, str):
        kwargs.setdefault("factory", True)
    kwargs.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_S)
    return uvicorn.Config(app, http=PROTOCOL, **kwargs)


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--workers", type=int, default=1, help="API processes on one port")
    args = parser.parse_args(argv)
    # uvicorn.run rather than a Config: with several workers it spawns them from these
    # arguments (the protocol by its import path).
    uvicorn.run(
        APP,
        factory=True,
        http=PROTOCOL,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        workers=args.workers,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
