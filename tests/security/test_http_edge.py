"""The HTTP edge against hostile requests: capped bodies, malformed headers, and errors that
are always problem+json whose ``type`` resolves to a page.

Each test replays a finding of the outside audit: a 128 MiB JSON body was buffered whole; a
5,000-character multipart boundary, a 5,000-digit ``Range`` or ``Last-Event-ID`` were 500s.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.errors import CATALOGUE, ErrorCode, problem_codes
from core.settings import get_settings
from core.storage import get_storage, new_key
from models import Job, new_id
from models.repositories import TenantRepository
from tests.conftest import DEV_KEY
from tests.factories import npz_bytes

PROBLEM = "application/problem+json"
HUGE = "9" * 5000
SMALL_NPZ = npz_bytes(np.zeros((5, 4), dtype=np.float32))


def _assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body = dict(resp.json())
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("/problems/")
    return body


def _latin1(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as bytes: HTTP allows any Latin-1 byte, httpx sends str as ASCII only."""
    return {name: value.encode("latin-1") for name, value in headers.items()}


# --- Bodies ---------------------------------------------------------------------------------


def _raw(port: int, head: str, body: bytes = b"", *, wait_s: float = 20) -> bytes:
    """Send a request head and (part of) a body, then read the answer without sending more."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as conn:
        conn.sendall(head.encode("latin-1") + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def _head(path: str, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {DEV_KEY}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_declared_oversized_json_body_is_refused_before_it_is_sent(live: int) -> None:
    # 128 MiB announced, 10 bytes sent: the answer comes at once, the body is never read.
    head = _head(
        "/v1/jobs", {"Content-Type": "application/json", "Content-Length": str(128 * 1024**2)}
    )
    answer = _raw(live, head, b'{"teacher_')
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"application/problem+json" in answer


def test_streamed_oversized_json_body_is_refused_past_the_cap(live: int) -> None:
    # Chunked (no Content-Length): 2 MiB are sent and the connection stays open; the answer
    # comes once the cap is passed, long before a 128 MiB body would have ended.
    cap = get_settings().max_body_bytes
    head = _head("/v1/jobs", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    block = b"[" * (64 * 1024)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    body = chunk * (2 * cap // len(block))
    answer = _raw(live, head, body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_json_body_under_the_cap_is_read(client: TestClient) -> None:
    padding = "x" * (get_settings().max_body_bytes // 2)
    resp = client.post("/v1/jobs", json={"teacher_ids": ["nope"], "dataset_id": padding})
    body = _assert_problem(resp, 422)  # read and validated, not refused for its size
    assert body["type"] == "/problems/invalid"


def test_uploads_are_not_held_to_the_json_cap(client: TestClient) -> None:
    data = b"\x00" * (get_settings().max_body_bytes + 1024)
    resp = client.post("/v1/datasets", files={"file": ("zeros.bin", data)})
    _assert_problem(resp, 415)  # streamed and looked at: its format, not its size, is wrong


# --- Malformed headers ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/teachers", "/v1/datasets", "/v1/jobs"])
def test_long_multipart_boundary_is_400(client: TestClient, path: str) -> None:
    boundary = "b" * 5000
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
    resp = client.post(
        path,
        content=body.encode() + b"data\r\n" + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)


@pytest.fixture
def finished_job(client: TestClient) -> tuple[str, bytes]:
    """A succeeded job with a stored student file (written here: no worker needed)."""
    from core.db import session_scope

    data = bytes(range(256)) * 40
    put = get_storage().put_stream(new_key("students"), [data])
    with session_scope() as session:
        tenant = TenantRepository(session).by_name("default")
        assert tenant is not None
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            status="succeeded",
            epochs=1,
            epoch=1,
            progress=1.0,
            spec={"teacher_ids": ["tch_none"], "dataset_id": "dst_none"},
            metrics={},
            artifacts={
                "onnx": {
                    "file_id": new_id("file"),
                    "key": put.key,
                    "sha256": put.sha256,
                    "size_bytes": put.size_bytes,
                    "filename": "student.onnx",
                }
            },
        )
        session.add(job)
    return job.id, data


@pytest.mark.parametrize(
    ("range_header", "status", "expect"),
    [
        (f"bytes={HUGE}-", 416, None),
        (f"bytes=0-{HUGE}", 206, slice(0, None)),
        (f"bytes=-{HUGE}", 206, slice(0, None)),
        ("bytes=10-19", 206, slice(10, 20)),
        ("bytes=\u00b2-3", 200, slice(0, None)),  # "²" is a digit to str.isdigit, not to int()
    ],
)
def test_range_header_with_huge_numbers(
    client: TestClient,
    finished_job: tuple[str, bytes],
    range_header: str,
    status: int,
    expect: slice | None,
) -> None:
    job_id, data = finished_job
    resp = client.get(f"/v1/jobs/{job_id}/student", headers=_latin1({"Range": range_header}))
    assert resp.status_code == status, resp.text
    if expect is None:
        _assert_problem(resp, 416)
    else:
        assert resp.content == data[expect]


@pytest.mark.parametrize("last_event_id", [HUGE, "\u00b2", "-1", "abc"])
def test_malformed_last_event_id_is_ignored(
    client: TestClient, finished_job: tuple[str, bytes], last_event_id: str
) -> None:
    job_id, _ = finished_job
    resp = client.get(
        f"/v1/jobs/{job_id}/events", headers=_latin1({"Last-Event-ID": last_event_id})
    )
    assert resp.status_code == 200
    assert "event: status" in resp.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Length": HUGE},
        {"Content-Length": "\u00b2"},
        {"Idempotency-Key": "k" * 5000},
        {"Authorization": "Bearer " + "k" * 5000},
        {"Authorization": "Basic \u00b2"},
    ],
)
def test_other_malformed_headers_are_4xx(client: TestClient, headers: dict[str, str]) -> None:
    resp = client.post(
        "/v1/jobs", content=b"{}", headers=_latin1({"Content-Type": "application/json", **headers})
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)


# --- Problem types resolve ------------------------------------------------------------------


def test_problem_type_uris_resolve_to_pages(client: TestClient) -> None:
    seen = {
        _assert_problem(client.get("/v1/jobs/job_missing"), 404)["type"],
        _assert_problem(client.get("/v1/jobs", headers={"Authorization": ""}), 401)["type"],
        _assert_problem(client.post("/v1/jobs", json={}), 422)["type"],
        _assert_problem(client.get("/v1/jobs", params={"cursor": "!"}), 400)["type"],
        _assert_problem(client.get("/no/such/route"), 404)["type"],
    }
    for type_uri in seen:
        page = client.get(type_uri)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        code = ErrorCode(type_uri.rsplit("/", 1)[1])
        assert CATALOGUE[code].meaning.replace("'", "&#x27;") in page.text


def test_every_code_has_a_page_and_the_index_lists_them(client: TestClient) -> None:
    index = client.get("/problems")
    assert index.status_code == 200
    for code in ErrorCode:
        assert f'href="/problems/{code}"' in index.text
    for code in problem_codes():
        page = client.get(f"/problems/{code}")
        assert page.status_code == 200 and f"HTTP {CATALOGUE[code].status}" in page.text
    assert client.get("/problems/too-large").text == client.get("/problems/too_large").text
    _assert_problem(client.get("/problems/no_such_code"), 404)
    _assert_problem(client.get("/problems/" + "x" * 5000), 404)


def test_home_page_points_to_jobs_and_docs(client: TestClient) -> None:
    resp = client.get("/", headers={"Authorization": ""})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert 'href="/jobs"' in resp.text and 'href="/docs"' in resp.text
    assert "script" not in resp.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/jobs/job%00x", {}),
        ("GET", "/v1/teachers/tch%00x", {}),
        ("GET", "/v1/jobs/job%00x/events", {}),
        ("POST", "/v1/jobs", {"json": {"teacher_ids": ["t\x00"], "dataset_id": "d"}}),
        (
            "POST",
            "/v1/datasets",
            {"files": {"file": ("x.npz", SMALL_NPZ)}, "data": {"name": "\x00"}},
        ),
    ],
)
def test_nul_characters_are_400_not_500(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    # Postgres text cannot hold NUL: the driver refuses the value before the query is sent.
    _assert_problem(client.request(method, path, **kwargs), 400)
