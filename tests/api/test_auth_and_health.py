from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from core.db import session_scope
from core.keys import create_key


def test_healthz_needs_no_key(client: TestClient) -> None:
    resp = client.get("/healthz", headers={"Authorization": ""})
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_reports_database_and_broker(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_missing_key_is_401_problem(client: TestClient) -> None:
    resp = client.get("/v1/teachers", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["status"] == 401 and body["title"] and body["detail"]


def test_unknown_key_is_401(client: TestClient) -> None:
    resp = client.get("/v1/teachers", headers={"Authorization": "Bearer sh_not_a_key"})
    assert resp.status_code == 401


def test_created_key_authenticates_its_own_tenant(client: TestClient) -> None:
    with session_scope() as session:
        key = create_key(session, tenant_name="acme")
    resp = client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200
    assert resp.json() == {"items": [], "next_cursor": None}


def test_keys_are_stored_hashed(client: TestClient) -> None:
    from sqlalchemy import select

    from models import ApiKey

    with session_scope() as session:
        key = create_key(session, tenant_name="acme")
        stored = list(session.scalars(select(ApiKey.key_hash)))
    assert key not in stored
    assert all(len(h) == 64 for h in stored)


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    resp = client.get("/v1/teachers/tch_missing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


def test_bad_cursor_is_400(client: TestClient) -> None:
    resp = client.get("/v1/teachers", params={"cursor": "%%%"})
    assert resp.status_code == 400
