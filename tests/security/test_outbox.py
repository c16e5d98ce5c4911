"""The transactional outbox with the broker pointed at a port where nothing listens: the
request still answers 201 (its row is committed), the task waits in ``task_outbox``, and it
is published once the broker answers again, by the API's drain or by the worker's sweep."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api import publisher
from core.db import session_scope
from core.queue import GPU_QUEUE, TASK_RUN_JOB
from core.settings import get_settings
from models import outbox, utcnow
from models.outbox import OutboxRepository, TaskOutbox
from tests.conftest import DEV_KEY, REDIS_URL, wait_for
from tests.factories import digits, npz_bytes


def _outbox() -> list[TaskOutbox]:
    with session_scope() as session:
        return OutboxRepository(session).due(utcnow() + timedelta(days=1), 100)


class Broker:
    """Points this process's publisher at a closed port (``down``) or the real Redis (``up``)."""

    def __init__(self) -> None:
        self._closed: socket.socket | None = None

    def down(self) -> None:
        self._closed = socket.socket()
        self._closed.bind(("127.0.0.1", 0))
        self._point(f"redis://127.0.0.1:{self._closed.getsockname()[1]}/0")

    def up(self) -> None:
        self._point(REDIS_URL)
        if self._closed is not None:
            self._closed.close()
            self._closed = None

    @staticmethod
    def _point(url: str) -> None:
        get_settings().broker_url = url
        publisher._client.cache_clear()


@pytest.fixture
def broker() -> Iterator[Broker]:
    control = Broker()
    try:
        yield control
    finally:
        control.up()


def _take_queued(queue: str, arg: str) -> bool:
    """Remove and report the message naming ``arg`` on ``queue`` (this run's key prefix)."""
    key = f"{get_settings().broker_key_prefix}{queue}"
    client = redis.Redis.from_url(REDIS_URL)
    found = [m for m in client.lrange(key, 0, -1) if arg.encode() in m]
    for message in found:
        client.lrem(key, 1, message)
    return bool(found)


def test_refused_publish_stays_in_the_outbox_until_drained(db: str, broker: Broker) -> None:
    broker.down()
    with session_scope() as session:
        # A job id on the gpu queue: no worker consumes it during this test.
        OutboxRepository(session).add(TASK_RUN_JOB, ["job_outbox_probe"])
    assert outbox.drain(publisher._publish_entry) == 0
    (entry,) = _outbox()
    assert entry.attempts == 1 and entry.last_error and entry.args == ["job_outbox_probe"]
    broker.up()
    assert outbox.drain(publisher._publish_entry) == 1
    assert _outbox() == []
    assert _take_queued(GPU_QUEUE, "job_outbox_probe")


@pytest.mark.slow
def test_upload_while_the_broker_is_down_is_validated_after_the_sweep(
    worker: object, broker: Broker, monkeypatch: Any
) -> None:
    from api.app import create_app

    # Only the worker's sweep may publish here: the API's own drain waits an hour.
    monkeypatch.setattr(get_settings(), "outbox_drain_seconds", 3600.0)
    with TestClient(create_app(), headers={"Authorization": f"Bearer {DEV_KEY}"}) as client:
        broker.down()
        x, _, _, _ = digits()
        resp = client.post("/v1/datasets", files={"file": ("x.npz", npz_bytes(x[:200]))})
        broker.up()
        assert resp.status_code == 201, resp.text
        dataset = resp.json()
        assert dataset["status"] == "validating"
        assert [e.args for e in _outbox()] == [[dataset["id"]]]

        def settled() -> dict[str, Any] | None:
            now = client.get(f"/v1/datasets/{dataset['id']}").json()
            return now if now["status"] != "validating" else None

        assert wait_for(settled, timeout=120)["status"] == "ready"
        assert _outbox() == []
