"""Requests per second per key: a token bucket in the process (embedded default) or in Redis
(shared by every API replica). Rates are tiny so that no refill happens during a test."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.ratelimit import LocalBuckets, RedisBuckets
from tests.conftest import DEV_KEY, REDIS_URL, RUN_ID


def test_local_bucket_lets_a_burst_through_then_asks_to_wait() -> None:
    buckets = LocalBuckets(rate=0.01, burst=3)

    async def take(n: int) -> list[float]:
        return [await buckets.wait_for("key_a") for _ in range(n)]

    waits = asyncio.run(take(4))
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 1.0  # one token at 0.01/s: about 100 s
    assert asyncio.run(buckets.wait_for("key_b")) == 0.0  # buckets are per key


def test_redis_bucket_is_shared_by_replicas() -> None:
    prefix = f"stillhouse-test-{RUN_ID}-{secrets.token_hex(3)}:"
    replica_a = RedisBuckets(REDIS_URL, prefix, rate=0.01, burst=3)
    replica_b = RedisBuckets(REDIS_URL, prefix, rate=0.01, burst=3)

    async def run() -> list[float]:
        try:
            return [
                await replica_a.wait_for("key_a"),
                await replica_b.wait_for("key_a"),
                await replica_a.wait_for("key_a"),
                await replica_b.wait_for("key_a"),
                await replica_b.wait_for("key_b"),
            ]
        finally:
            await replica_a.aclose()
            await replica_b.aclose()

    waits = asyncio.run(run())
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 1.0  # the fourth request, on the other replica, finds the bucket empty
    assert waits[4] == 0.0


def test_redis_outage_lets_requests_through() -> None:
    """The limit protects the service; a Redis outage must not refuse every request."""
    from bench._harness import free_port

    down = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", "x:", rate=0.01, burst=1)

    async def run() -> list[float]:
        try:
            return [await down.wait_for("key_a") for _ in range(3)]
        finally:
            await down.aclose()

    assert asyncio.run(run()) == [0.0, 0.0, 0.0]


@pytest.fixture(params=["redis", "local"])
def limited_client(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, db: str
) -> Iterator[tuple[str, TestClient]]:
    """A fresh app with a limit of 2 requests in a burst; ``local`` runs without Redis."""
    from api.app import create_app
    from core.settings import get_settings

    monkeypatch.setenv("STILLHOUSE_RATE_LIMIT_PER_SECOND", "0.01")
    monkeypatch.setenv("STILLHOUSE_RATE_LIMIT_BURST", "2")
    # Each run its own buckets: the key is the same bootstrap key in every test.
    monkeypatch.setenv("STILLHOUSE_BROKER_KEY_PREFIX", f"stillhouse-test-{secrets.token_hex(4)}:")
    if request.param == "local":
        monkeypatch.setenv("STILLHOUSE_BROKER_URL", "")
    get_settings.cache_clear()
    try:
        with TestClient(create_app(), headers={"Authorization": f"Bearer {DEV_KEY}"}) as client:
            yield request.param, client
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_over_the_rate_a_key_gets_429_with_retry_after(
    limited_client: tuple[str, TestClient],
) -> None:
    backend, client = limited_client
    assert [client.get("/v1/jobs").status_code for _ in range(2)] == [200, 200]
    resp = client.get("/v1/jobs")
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) >= 1
    limiter = client.app.state.rate_limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, RedisBuckets if backend == "redis" else LocalBuckets)
    assert client.get("/healthz").status_code == 200  # unauthenticated probes are not limited
