"""``GET /metrics``: scraped and parsed with prometheus-client's own parser. The API (this
process) and the Celery workers (their own processes) write to one multiprocess folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bench._harness import free_port
from tests.api.conftest import _body, _finished
from tests.api.receiver import Receiver
from tests.conftest import truncate, wait_for
from tests.factories import digits, npz_bytes

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    resp = client.get("/metrics", headers={"Authorization": ""})  # no key needed
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        assert family.name.startswith("stillhouse_"), family.name
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def client(jobs_client: TestClient) -> Iterator[TestClient]:
    yield jobs_client
    truncate(only=("webhooks", "webhook_messages", "webhook_attempts"))


def test_requests_are_counted_and_timed_by_route_template(client: TestClient) -> None:
    before = scrape(client)
    for job_id in ("job_a", "job_b", "job_c"):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    after = scrape(client)
    route = "/v1/jobs/{job_id}"
    requests = "stillhouse_http_requests_total"
    counted = value(after, requests, method="GET", route=route, status="404")
    assert counted - value(before, requests, method="GET", route=route, status="404") == 3
    latency = "stillhouse_http_request_duration_seconds_count"
    timed = value(after, latency, method="GET", route=route)
    assert timed - value(before, latency, method="GET", route=route) == 3
    assert not any("job_a" in str(labels) for _, labels in after)  # ids never become labels


def test_upload_bytes_jobs_by_status_and_queue_depth(
    client: TestClient, inputs: dict[str, str]
) -> None:
    before = scrape(client)
    x, _, _, _ = digits()
    data = npz_bytes(x[:50])
    assert client.post("/v1/datasets", files={"file": ("m.npz", data)}).status_code == 201
    for _ in range(2):
        assert client.post("/v1/jobs", json=_body(inputs)).status_code == 201  # no job worker
    after = scrape(client)
    uploaded = "stillhouse_upload_bytes_total"
    assert value(after, uploaded, kind="dataset") - value(before, uploaded, kind="dataset") == len(
        data
    )
    assert value(after, "stillhouse_jobs", status="queued") == 2
    assert value(after, "stillhouse_jobs", status="running") == 0
    assert value(after, "stillhouse_queue_depth", queue="gpu") >= 2  # nobody consumes it here
    assert ("stillhouse_queue_depth", frozenset({("queue", "validate")})) in after


def test_a_succeeded_job_reports_stage_durations_and_its_webhook(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    """Stage durations come from the worker process; the job.succeeded event from the outbox."""
    receiver = Receiver(free_port()).start()
    try:
        hook = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]})
        receiver.secret = hook.json()["secret"]
        before = scrape(client)
        job = _finished(client, client.post("/v1/jobs", json=_body(inputs)).json()["id"])
        assert job["status"] == "succeeded", job["error"]
        after = scrape(client)
        stages = "stillhouse_job_stage_duration_seconds_count"
        for stage in ("soft_labeling", "training", "evaluating", "exporting"):
            assert value(after, stages, stage=stage) - value(before, stages, stage=stage) == 1
        assert value(after, "stillhouse_jobs", status="succeeded") >= 1
        wait_for(lambda: receiver.deliveries, timeout=60)
        [delivery] = receiver.deliveries
        assert delivery.valid and delivery.payload["type"] == "job.succeeded"
        assert delivery.payload["data"]["id"] == job["id"]
        attempts = "stillhouse_webhook_attempts_total"
        wait_for(lambda: value(scrape(client), attempts, outcome="delivered") >= 1, timeout=10)
    finally:
        receiver.stop()
