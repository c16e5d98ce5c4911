"""Per-tenant quotas: concurrent active jobs (429 + Retry-After), stored bytes (413)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _body
from tests.factories import digits, npz_bytes

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow


@pytest.fixture
def quota(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set quota settings for one test (settings are read once: the cache is cleared)."""
    from core.settings import get_settings

    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def _set(quota: pytest.MonkeyPatch, **values: str) -> None:
    from core.settings import get_settings

    for name, value in values.items():
        quota.setenv(f"STILLHOUSE_{name.upper()}", value)
    get_settings.cache_clear()


def test_submit_over_the_active_jobs_quota_is_429_with_retry_after(
    jobs_client: TestClient, inputs: dict[str, str], quota: pytest.MonkeyPatch
) -> None:
    _set(quota, max_active_jobs="2")
    first = [jobs_client.post("/v1/jobs", json=_body(inputs)) for _ in range(2)]
    assert [r.status_code for r in first] == [201, 201]  # no job worker: both stay queued
    resp = jobs_client.post("/v1/jobs", json=_body(inputs))
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) > 0
    assert "2 queued or running" in resp.json()["detail"]
    cancel = jobs_client.post(f"/v1/jobs/{first[0].json()['id']}/cancel")
    assert cancel.status_code == 202
    assert jobs_client.post("/v1/jobs", json=_body(inputs)).status_code == 201  # room again


def test_upload_over_the_stored_bytes_quota_is_413_and_keeps_nothing(
    jobs_client: TestClient, inputs: dict[str, str], quota: pytest.MonkeyPatch
) -> None:
    from core.db import get_sessionmaker
    from core.settings import get_settings
    from models.repositories import TenantRepository
    from models.usage_repository import UsageRepository

    with get_sessionmaker()() as session:
        tenant = TenantRepository(session).by_name("default")
        assert tenant is not None
        used = UsageRepository(session).stored_bytes(tenant.id)
    files_before = sorted(p for p in get_settings().storage_dir.rglob("*") if p.is_file())
    x, _, _, _ = digits()
    data = npz_bytes(x[:100])
    _set(quota, max_stored_bytes=str(used + len(data) // 2))
    resp = jobs_client.post("/v1/datasets", files={"file": ("more.npz", data)})
    assert resp.status_code == 413, resp.text
    assert "quota" in resp.json()["detail"]
    with get_sessionmaker()() as session:
        assert UsageRepository(session).stored_bytes(tenant.id) == used
    files_after = sorted(p for p in get_settings().storage_dir.rglob("*") if p.is_file())
    assert files_after == files_before
    _set(quota, max_stored_bytes=str(used + len(data) + 1))
    assert jobs_client.post("/v1/datasets", files={"file": ("more.npz", data)}).status_code == 201
