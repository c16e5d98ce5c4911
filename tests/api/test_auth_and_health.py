from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from core.db import session_scope
from models.keys import create_key


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


def _revoke(key: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from core.keys import hash_key
    from models.tables import ApiKey

    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(key))
            .values(revoked_at=datetime.now(UTC))
        )


def test_revoked_key_is_refused_once_the_cache_entry_expires(client: TestClient) -> None:
    from api.deps import KeyCache

    client.app.state.key_cache = KeyCache(ttl=0.5)  # type: ignore[attr-defined]
    with session_scope() as session:
        key = create_key(session, tenant_name="revoked-later")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/datasets", headers=headers).status_code == 200  # cached now
    _revoke(key)
    assert client.get("/v1/datasets", headers=headers).status_code == 200  # within the TTL
    time.sleep(0.6)
    assert client.get("/v1/datasets", headers=headers).status_code == 401


def test_without_the_cache_a_revoked_key_is_refused_at_once(client: TestClient) -> None:
    from api.deps import KeyCache

    client.app.state.key_cache = KeyCache(ttl=0)  # type: ignore[attr-defined]
    with session_scope() as session:
        key = create_key(session, tenant_name="revoked-now")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/datasets", headers=headers).status_code == 200
    _revoke(key)
    assert client.get("/v1/datasets", headers=headers).status_code == 401


def test_key_cache_never_outgrows_its_bound() -> None:
    from api.deps import KeyCache

    cache = KeyCache(ttl=60, max_entries=3)
    for i in range(10):
        cache.put(f"h{i}", f"t{i}")
    assert len(cache._entries) <= 3
    assert cache.get("h9") == "t9"
    assert cache.get("missing") is None
