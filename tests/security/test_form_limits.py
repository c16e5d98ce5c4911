"""The form around an upload's file is capped: parts, and bytes of part headers and fields.

The audit sent 100,000 fields of 4 kB beside the file (387 MiB, chunked): each field was
capped, their number and total were not, and uploads skip the 1 MiB body cap. The API kept
it (201) and grew by 400 MB. Past ``STILLHOUSE_MAX_FORM_PARTS`` parts or
``STILLHOUSE_MAX_FORM_BYTES`` of non-file bytes the upload is a 413, before the rest is read.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.conftest import DEV_KEY
from tests.factories import npz_bytes

BOUNDARY = "formlimits"
CONTENT_TYPE = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
SMALL_NPZ = npz_bytes(np.zeros((5, 4), dtype=np.float32))


def _field(name: str, value: bytes, extra_header: bytes = b"") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
        + extra_header
        + b"\r\n"
        + value
        + b"\r\n"
    )


def _file() -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
    return head.encode() + SMALL_NPZ + b"\r\n"


def _form(fields: Iterator[bytes], sent: list[int]) -> Iterator[bytes]:
    yield _file()
    for part in fields:
        sent[0] += len(part)
        yield part
    yield f"--{BOUNDARY}--\r\n".encode()


def _stored_files() -> list[Path]:
    return [p for p in get_settings().storage_dir.rglob("*") if p.is_file()]


def _send_until_answered(port: int, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Stream a chunked upload until the server answers; (the answer's head, bytes sent)."""
    head = (
        "POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {DEV_KEY}\r\nContent-Type: {CONTENT_TYPE['content-type']}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head.encode())
        for piece in body:
            if select.select([conn], [], [], 0)[0]:
                break
            try:
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:
                break
            sent += len(piece)
        return conn.recv(65536), sent


def test_too_many_form_parts_are_413_before_the_rest_is_read(live: int) -> None:
    """The audit's 100,000 fields of 4 kB (400 MB): refused at the 17th part."""
    before = _stored_files()
    fields = (_field(f"f{i}", b"x" * 4000) for i in range(100_000))
    answer, sent = _send_until_answered(live, _form(fields, [0]))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"parts" in answer
    assert sent < 64 * 1024**2, sent  # what the socket buffers took, not 400 MB
    assert _stored_files() == before  # the file it had begun is gone


def test_non_file_bytes_over_the_cap_are_413(client: TestClient) -> None:
    """Three parts, each under python-multipart's own caps (8 header lines of 4 kB)."""
    sent = [0]
    header = b"".join(f"X-Pad-{i}: ".encode() + b"p" * 4000 + b"\r\n" for i in range(7))
    fields = (_field(f"f{i}", b"v", header) for i in range(3))
    resp = client.post("/v1/datasets", content=_form(fields, sent), headers=CONTENT_TYPE)
    assert resp.status_code == 413, resp.text
    assert "fields and part headers" in resp.json()["detail"]


def test_a_form_within_the_caps_is_stored(client: TestClient) -> None:
    sent = [0]
    fields = iter([_field("name", b"small set")])
    resp = client.post("/v1/datasets", content=_form(fields, sent), headers=CONTENT_TYPE)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "small set"
