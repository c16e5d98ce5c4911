"""/readyz lists the live workers from their heartbeats (Redis broker here; the embedded
broker is covered by tests/cli/test_run.py)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from core import heartbeat
from core.settings import get_settings
from tests.conftest import RUN_ID, wait_for


def test_readyz_lists_a_running_worker_and_its_queue(client: TestClient, worker: object) -> None:
    def listed() -> dict[str, object] | None:
        body = client.get("/readyz").json()
        names = [w["name"] for w in body["workers"]["items"]]
        return body if f"validate-{RUN_ID}@" in " ".join(names) else None

    body = wait_for(listed, timeout=60, interval=0.5)
    assert body["status"] == "ok" and body["workers"]["status"] == "ok"
    mine = [w for w in body["workers"]["items"] if w["name"].startswith(f"validate-{RUN_ID}@")]
    assert mine[0]["queues"] == ["validate"]


def test_a_silent_worker_drops_out_without_failing_the_probe(client: TestClient) -> None:
    settings = get_settings()
    stale = time.time() - 10 * settings.heartbeat_seconds
    client_redis = heartbeat._redis(settings.resolved_broker_url)
    key = settings.broker_key_prefix + heartbeat.HASH
    client_redis.hset(
        key, "ghost@nowhere", f'{{"name": "ghost@nowhere", "queues": ["gpu"], "seen": {stale}}}'
    )
    try:
        body = client.get("/readyz").json()
    finally:
        heartbeat.forget(settings, "ghost@nowhere")
    assert "ghost@nowhere" not in [w["name"] for w in body["workers"]["items"]]
    assert client.get("/readyz").status_code == 200
