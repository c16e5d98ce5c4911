"""Uploads through HTTP, validated by a real worker process."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from core.db import session_scope
from core.settings import get_settings
from models.keys import create_key
from tests.conftest import wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes


def _upload(client: TestClient, kind: str, name: str, data: bytes) -> dict[str, Any]:
    resp = client.post(f"/v1/{kind}", files={"file": (name, data)}, data={"name": "my " + name})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _settled(client: TestClient, kind: str, obj_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = client.get(f"/v1/{kind}/{obj_id}").json()
        return None if obj["status"] == "validating" else obj

    return dict(wait_for(done, timeout=90))


def test_teacher_upload_is_hashed_and_validated(client: TestClient, worker: object) -> None:
    data = teacher_pt2_bytes()
    created = _upload(client, "teachers", "../../evil name.pt2", data)
    assert created["status"] == "validating"
    assert created["format"] == "torch_export"
    assert created["sha256"] == hashlib.sha256(data).hexdigest()
    assert created["size_bytes"] == len(data)
    assert created["filename"] == "evil name.pt2"
    assert created["name"] == "my ../../evil name.pt2"
    ready = _settled(client, "teachers", created["id"])
    assert ready["status"] == "ready", ready["error"]
    assert ready["input_shape"] == [None, 64]
    assert ready["num_classes"] == 10
    assert ready["input_dtype"] == "float32"
    assert ready["parameters"] == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_dataset_upload_reports_its_shape(client: TestClient, worker: object) -> None:
    x, y, _, _ = digits()
    created = _upload(client, "datasets", "train.npz", npz_bytes(x, y))
    assert created["format"] == "npz"
    ready = _settled(client, "datasets", created["id"])
    assert ready["status"] == "ready", ready["error"]
    assert ready["num_samples"] == len(x)
    assert ready["sample_shape"] == [64]
    assert ready["has_labels"] is True
    assert ready["num_classes"] == 10


def test_hostile_npy_is_rejected_with_a_reason(client: TestClient, worker: object) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    created = _upload(client, "datasets", "x.npy", buf.getvalue())
    settled = _settled(client, "datasets", created["id"])
    assert settled["status"] == "rejected"
    assert settled["error"]["code"] and settled["error"]["message"]


def test_unknown_content_is_415_and_leaves_no_file(client: TestClient) -> None:
    before = _files()
    resp = client.post("/v1/teachers", files={"file": ("model.onnx", b"\x00garbage" * 100)})
    assert resp.status_code == 415
    assert resp.headers["content-type"] == "application/problem+json"
    assert _files() == before


def test_too_large_is_413_and_leaves_no_file(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1000)
    before = _files()
    resp = client.post("/v1/datasets", files={"file": ("x.npy", b"x" * 5000)})
    assert resp.status_code == 413
    assert _files() == before


def test_form_without_file_is_400(client: TestClient) -> None:
    resp = client.post("/v1/datasets", data={"name": "nothing"})
    assert resp.status_code == 400


def test_a_file_under_another_name_is_400_naming_the_file_part(client: TestClient) -> None:
    """curl -F data=@x.npz: a file part, not a form field too long or too large."""
    before = _files()
    resp = client.post("/v1/datasets", files={"data": ("x.npz", b"x" * 100_000)})
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    assert "'data'" in detail and "part named 'file'" in detail, detail
    resp = client.post("/v1/teachers", files={"tok": ("t.json", b"{}")})
    assert resp.status_code == 400 and "'file' or 'tokenizer'" in resp.json()["detail"]
    assert _files() == before


def test_other_tenants_objects_answer_404(client: TestClient, worker: object) -> None:
    x, _, _, _ = digits()
    created = _upload(client, "datasets", "a.npz", npz_bytes(x[:10]))
    with session_scope() as session:
        other = create_key(session, tenant_name="other")
    headers = {"Authorization": f"Bearer {other}"}
    assert client.get(f"/v1/datasets/{created['id']}", headers=headers).status_code == 404
    assert client.delete(f"/v1/datasets/{created['id']}", headers=headers).status_code == 404
    assert client.get("/v1/datasets", headers=headers).json()["items"] == []
    assert client.get(f"/v1/datasets/{created['id']}").status_code == 200


def test_list_pages_newest_first_and_delete(client: TestClient, worker: object) -> None:
    x, _, _, _ = digits()
    ids = [_upload(client, "datasets", f"{i}.npz", npz_bytes(x[:5]))["id"] for i in range(3)]
    first = client.get("/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2]
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in second["items"]] == [ids[0]] and second["next_cursor"] is None
    assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 204
    assert client.get(f"/v1/datasets/{ids[0]}").status_code == 404


def _files() -> set[str]:
    root = get_settings().storage_dir
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_a_multi_block_upload_is_hashed_and_stored_whole(client: TestClient) -> None:
    from api.multipart import BLOCK

    data = np.random.default_rng(1).random((3 * BLOCK // 4 + 123, 1), dtype=np.float32)
    body = npz_bytes(data)
    assert len(body) > 2 * BLOCK
    before = _files()
    created = _upload(client, "datasets", "big.npz", body)
    assert created["size_bytes"] == len(body)
    assert created["sha256"] == hashlib.sha256(body).hexdigest()
    (new,) = _files() - before
    assert Path(new).read_bytes() == body


def test_body_that_ends_inside_the_file_is_400_and_leaves_no_file(client: TestClient) -> None:
    before = _files()
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.npy"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    resp = client.post(
        "/v1/datasets",
        content=head + b"\x93NUMPY" + b"x" * (3 * 1024 * 1024),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status_code == 400, resp.text
    assert _files() == before
