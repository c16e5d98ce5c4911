"""API keys: scopes, listing, revocation (here at once, elsewhere within the cache time)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for


def _key(client: TestClient, scope: str, name: str = "") -> dict[str, Any]:
    resp = client.post("/v1/keys", json={"name": name or scope, "scope": scope})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def other_app(client: TestClient) -> Iterator[TestClient]:
    """A second API process (its own auth cache) on the same database."""
    from api.app import create_app

    with TestClient(create_app()) as other:
        yield other


def test_created_key_is_shown_once_and_listed_without_its_secret(client: TestClient) -> None:
    made = _key(client, "read", "dashboard")
    assert made["key"].startswith("sh_") and made["key"][:8] == made["prefix"]
    assert made["scope"] == "read" and made["name"] == "dashboard"
    listed = client.get("/v1/keys").json()["items"]
    mine = next(k for k in listed if k["id"] == made["id"])
    assert "key" not in mine and "key_hash" not in mine
    assert mine["prefix"] == made["prefix"] and mine["last_used_at"] is None
    bootstrap = [k for k in listed if k["id"] != made["id"]]
    assert [k["scope"] for k in bootstrap] == ["admin"]


def test_read_key_reads_but_cannot_write(client: TestClient) -> None:
    key = _key(client, "read")["key"]
    assert client.get("/v1/jobs", headers=_as(key)).status_code == 200
    resp = client.post("/v1/jobs", json={}, headers=_as(key))
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert "read" in resp.json()["detail"]
    files = {"file": ("x.npy", b"\x93NUMPY")}
    assert client.post("/v1/datasets", files=files, headers=_as(key)).status_code == 403


def test_write_key_writes_but_cannot_manage_keys_or_webhooks(client: TestClient) -> None:
    key = _key(client, "write")["key"]
    assert client.post("/v1/jobs", json={}, headers=_as(key)).status_code == 422  # past scope
    for method, path, body in [
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"scope": "admin"}),
        ("GET", "/v1/webhooks", None),
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/", "events": ["job.failed"]}),
    ]:
        resp = client.request(method, path, json=body, headers=_as(key))
        assert resp.status_code == 403, (method, path, resp.text)


def test_revoked_key_is_refused_at_once_here(client: TestClient) -> None:
    made = _key(client, "write")
    assert client.get("/v1/jobs", headers=_as(made["key"])).status_code == 200
    assert client.delete(f"/v1/keys/{made['id']}").status_code == 204
    assert client.get("/v1/jobs", headers=_as(made["key"])).status_code == 401
    assert made["id"] not in [k["id"] for k in client.get("/v1/keys").json()["items"]]
    assert client.delete(f"/v1/keys/{made['id']}").status_code == 404


def test_revoked_key_is_refused_by_another_process_within_the_cache_time(
    client: TestClient, other_app: TestClient
) -> None:
    made = _key(client, "read")
    assert other_app.get("/v1/jobs", headers=_as(made["key"])).status_code == 200  # cached
    assert client.delete(f"/v1/keys/{made['id']}").status_code == 204
    wait_for(
        lambda: other_app.get("/v1/jobs", headers=_as(made["key"])).status_code == 401,
        timeout=30,
        interval=0.5,
    )


def test_use_sets_last_used_at(client: TestClient) -> None:
    made = _key(client, "read")
    client.get("/v1/jobs", headers=_as(made["key"]))
    listed = client.get("/v1/keys").json()["items"]
    assert next(k for k in listed if k["id"] == made["id"])["last_used_at"] is not None


def test_keys_of_another_tenant_are_invisible(client: TestClient, session: Any) -> None:
    from models.keys import create_key

    other = create_key(session, tenant_name="other-tenant")
    session.commit()
    mine = _key(client, "read")
    assert client.delete(f"/v1/keys/{mine['id']}", headers=_as(other)).status_code == 404
    ids = [k["id"] for k in client.get("/v1/keys", headers=_as(other)).json()["items"]]
    assert mine["id"] not in ids and len(ids) == 1


def test_key_scope_is_a_closed_choice(client: TestClient) -> None:
    resp = client.post("/v1/keys", json={"name": "x", "scope": "root"})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "scope"
