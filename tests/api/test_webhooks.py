"""Webhooks: endpoints, the SSRF guard, and deliveries to a real receiver that checks the
Standard Webhooks signature, through the real outbox and Celery sweep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench._harness import free_port
from tests.api.conftest import _body
from tests.api.receiver import Receiver
from tests.conftest import truncate, wait_for

WEBHOOK_TABLES = ("webhooks", "webhook_messages", "webhook_attempts")

# Real jobs and deliveries through worker processes: not in the fast lane.
pytestmark = pytest.mark.slow


def _hook(client: TestClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    resp = client.post("/v1/webhooks", json={"url": url, "events": events or ["job.cancelled"]})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _deliveries(client: TestClient, hook_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/webhooks/{hook_id}/deliveries")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver(free_port())
    yield rcv
    rcv.stop()


@pytest.fixture
def hooks_client(jobs_client: TestClient) -> Iterator[TestClient]:
    """The module's shared app and uploads (tests/api/conftest.py); endpoints emptied after."""
    yield jobs_client
    truncate(only=WEBHOOK_TABLES)


@pytest.fixture
def private_refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from core.settings import get_settings

    monkeypatch.setenv("STILLHOUSE_WEBHOOK_ALLOW_PRIVATE", "false")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_endpoint_secret_is_shown_once_and_delete_drops_it(client: TestClient) -> None:
    made = _hook(client, "http://127.0.0.1:9/hook", ["job.succeeded", "job.failed"])
    assert made["secret"].startswith("whsec_") and made["events"] == ["job.failed", "job.succeeded"]
    listed = client.get("/v1/webhooks").json()["items"]
    assert [h["id"] for h in listed] == [made["id"]] and "secret" not in listed[0]
    assert "secret" not in client.get(f"/v1/webhooks/{made['id']}").json()
    assert client.delete(f"/v1/webhooks/{made['id']}").status_code == 204
    assert client.get(f"/v1/webhooks/{made['id']}").status_code == 404
    assert client.get(f"/v1/webhooks/{made['id']}/deliveries").status_code == 404


def test_unknown_events_and_schemes_are_refused(client: TestClient) -> None:
    bad_event = client.post("/v1/webhooks", json={"url": "http://x.test/", "events": ["job.x"]})
    assert bad_event.status_code == 422
    bad_scheme = client.post("/v1/webhooks", json={"url": "file:///etc/passwd", "events": []})
    assert bad_scheme.status_code == 422
    ftp = client.post("/v1/webhooks", json={"url": "ftp://h/", "events": ["job.failed"]})
    assert ftp.status_code == 422 and ftp.json()["errors"][0]["field"] == "url"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_internal_addresses_are_refused_unless_allowed(
    client: TestClient, private_refused: None, url: str
) -> None:
    resp = client.post("/v1/webhooks", json={"url": url, "events": ["job.failed"]})
    assert resp.status_code == 422, resp.text
    assert "not a public address" in resp.json()["detail"]


def test_delivery_to_loopback_is_refused_when_private_addresses_are_not_allowed(
    client: TestClient, receiver: Receiver, session: Any
) -> None:
    """The guard at delivery time (DNS may have changed since the endpoint was registered)."""
    from core.settings import Settings
    from models import WebhookMessage
    from worker.webhooks import deliver_due

    hook = _hook(client, receiver.start().url, ["job.failed"])
    receiver.secret = hook["secret"]
    job_id = _failed_job(session)
    assert deliver_due(Settings(webhook_allow_private=False)) == 0
    assert receiver.deliveries == []
    [attempt] = _deliveries(client, hook["id"])
    assert attempt["job_id"] == job_id and attempt["status_code"] is None
    assert attempt["error"].startswith("refused:") and attempt["message_status"] == "failed"
    session.expire_all()
    assert session.get(WebhookMessage, attempt["message_id"]).status == "failed"


def _failed_job(session: Any) -> str:
    """A job failed the way a worker fails one: claim, then a fenced fail, committed."""
    from datetime import timedelta

    from models import Job, new_id
    from models.job_repository import JobRepository
    from models.repositories import TenantRepository

    tenant = TenantRepository(session).by_name("default")
    assert tenant is not None
    job = Job(id=new_id("job"), tenant_id=tenant.id, status="queued", epochs=1, spec={})
    jobs = JobRepository(session)
    jobs.add(job, [], {})
    attempt = jobs.claim(job.id, worker="test:1", lease=timedelta(seconds=30), max_attempts=3)
    assert attempt is not None
    assert jobs.fail(job.id, attempt, code="bad_teacher", message="no")
    session.commit()
    return job.id


def test_job_event_is_written_with_the_status_in_one_transaction(
    client: TestClient, receiver: Receiver, session: Any
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select

    from models import Job, WebhookMessage, new_id
    from models.job_repository import JobRepository
    from models.repositories import TenantRepository

    _hook(client, receiver.url, ["job.failed"])
    tenant = TenantRepository(session).by_name("default")
    assert tenant is not None
    job = Job(id=new_id("job"), tenant_id=tenant.id, status="queued", epochs=1, spec={})
    jobs = JobRepository(session)
    jobs.add(job, [], {})
    session.commit()
    attempt = jobs.claim(job.id, worker="test:1", lease=timedelta(seconds=30), max_attempts=3)
    assert attempt is not None and jobs.fail(job.id, attempt, code="x", message="y")
    count = select(func.count()).select_from(WebhookMessage)
    assert session.scalar(count) == 1
    session.rollback()  # the status change did not happen: neither did its event
    assert session.scalar(count) == 0
    assert session.get(Job, job.id).status == "queued"


def test_cancelled_job_is_delivered_signed_by_the_sweep(
    hooks_client: TestClient, inputs: dict[str, str], receiver: Receiver
) -> None:
    client = hooks_client
    hook = _hook(client, receiver.start().url, ["job.cancelled", "job.succeeded"])
    receiver.secret = hook["secret"]
    job = client.post("/v1/jobs", json=_body(inputs)).json()  # no job worker: it stays queued
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    wait_for(lambda: receiver.deliveries, timeout=60)
    [delivery] = receiver.deliveries
    assert delivery.valid and delivery.path == "/hooks/stillhouse"
    payload = delivery.payload
    assert payload["type"] == "job.cancelled" and payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "cancelled"
    log = wait_for(lambda: _deliveries(client, hook["id"]), timeout=10)
    assert log[0]["message_id"] == delivery.headers["webhook-id"]
    assert log[0]["status_code"] == 204 and log[0]["message_status"] == "delivered"


def test_delivery_retries_until_a_receiver_that_was_down_comes_up(
    hooks_client: TestClient, inputs: dict[str, str], receiver: Receiver
) -> None:
    client = hooks_client
    hook = _hook(client, receiver.url, ["job.cancelled"])  # nothing listens there yet
    receiver.secret = hook["secret"]
    job = client.post("/v1/jobs", json=_body(inputs)).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    failed = wait_for(lambda: len(_deliveries(client, hook["id"])) >= 2, timeout=90)
    assert failed
    log = _deliveries(client, hook["id"])
    assert all(a["status_code"] is None and a["error"] for a in log)
    assert log[0]["message_status"] == "pending" and log[0]["next_attempt_at"] is not None
    receiver.start()
    wait_for(lambda: receiver.deliveries, timeout=120)
    assert [d.valid for d in receiver.deliveries] == [True]
    delivered = wait_for(
        lambda: [a for a in _deliveries(client, hook["id"]) if a["status_code"] == 204],
        timeout=10,
    )
    assert delivered[0]["attempt"] > len(log) - 1 >= 1
    assert delivered[0]["message_id"] == receiver.deliveries[0].headers["webhook-id"]
    assert {a["message_id"] for a in _deliveries(client, hook["id"])} == {
        delivered[0]["message_id"]
    }  # one message, the same webhook-id on every attempt
