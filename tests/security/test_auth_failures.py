"""Failed authentication is rate limited per client address.

The audit sent 300 requests with unknown keys: none was limited, and each one cost a
database lookup. Past ``STILLHOUSE_AUTH_FAILURE_BURST`` failures an address gets 429 with
``Retry-After`` before any lookup; other addresses and cached keys are not affected.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.conftest import DEV_KEY

BURST = 30


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, db: str) -> Iterator[Any]:
    """A fresh app with the default failure limit and buckets of its own in Redis."""
    from api.app import create_app
    from core.settings import get_settings

    monkeypatch.setenv("STILLHOUSE_AUTH_FAILURE_BURST", str(BURST))
    monkeypatch.setenv("STILLHOUSE_AUTH_FAILURES_PER_SECOND", "0.01")  # no refill meanwhile
    monkeypatch.setenv("STILLHOUSE_BROKER_KEY_PREFIX", f"stillhouse-test-{secrets.token_hex(4)}:")
    get_settings.cache_clear()
    yield create_app()
    monkeypatch.undo()
    get_settings.cache_clear()


class StatementCounter:
    def __init__(self) -> None:
        from core.db import get_engine

        self.engine, self.count = get_engine(), 0
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def _unknown_key() -> dict[str, str]:
    return {"Authorization": f"Bearer sh_{secrets.token_hex(16)}"}


def test_unknown_keys_from_one_address_get_429_without_a_lookup(app: Any) -> None:
    with TestClient(app, client=("203.0.113.7", 40000)) as attacker:
        assert attacker.get("/v1/jobs", headers={"Authorization": f"Bearer {DEV_KEY}"}).is_success
        statuses = [attacker.get("/v1/jobs", headers=_unknown_key()) for _ in range(BURST)]
        assert {r.status_code for r in statuses} == {401}
        counter = StatementCounter()
        try:
            over = [attacker.get("/v1/jobs", headers=_unknown_key()) for _ in range(300 - BURST)]
        finally:
            counter.close()
        assert {r.status_code for r in over} == {429}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in over)
        assert counter.count == 0, f"{counter.count} SQL statements for refused requests"
        # A key this process already knows keeps working from the same address.
        assert attacker.get("/v1/jobs", headers={"Authorization": f"Bearer {DEV_KEY}"}).is_success


def test_the_limit_is_per_address(app: Any) -> None:
    with TestClient(app, client=("203.0.113.8", 40000)) as attacker:
        for _ in range(BURST + 1):
            last = attacker.get("/v1/jobs", headers=_unknown_key())
        assert last.status_code == 429
    with TestClient(app, client=("198.51.100.9", 40000)) as other:
        assert other.get("/v1/jobs", headers=_unknown_key()).status_code == 401
        assert other.get("/v1/jobs", headers={"Authorization": f"Bearer {DEV_KEY}"}).is_success
