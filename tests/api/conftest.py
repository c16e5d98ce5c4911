"""Fixtures for the jobs tests: a ready teacher, transfer set and eval set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEV_KEY, truncate, wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes

FAST = {"training": {"epochs": 3, "batch_size": 64}}


def _ready(client: TestClient, kind: str, name: str, data: bytes) -> str:
    resp = client.post(f"/v1/{kind}", files={"file": (name, data)})
    assert resp.status_code == 201, resp.text
    obj_id = resp.json()["id"]

    def ready() -> bool:
        obj = client.get(f"/v1/{kind}/{obj_id}").json()
        assert obj["status"] != "rejected", obj["error"]
        return bool(obj["status"] == "ready")

    wait_for(ready, timeout=90)
    return str(obj_id)


@pytest.fixture(scope="module")
def shared_client(pg_database: str, worker_process: object) -> Iterator[TestClient]:
    """One app and one set of uploads for a whole module; jobs are emptied after each test."""
    from api.app import create_app

    with TestClient(create_app(), headers={"Authorization": f"Bearer {DEV_KEY}"}) as c:
        yield c
    truncate()


@pytest.fixture
def jobs_client(shared_client: TestClient) -> Iterator[TestClient]:
    yield shared_client
    truncate(only=("jobs", "job_teachers", "job_datasets"))


@pytest.fixture(scope="module")
def inputs(shared_client: TestClient) -> dict[str, str]:
    client = shared_client
    x, _, xe, ye = digits()
    return {
        "teacher": _ready(client, "teachers", "t.pt2", teacher_pt2_bytes()),
        "transfer": _ready(client, "datasets", "transfer.npz", npz_bytes(x)),
        "eval": _ready(client, "datasets", "eval.npz", npz_bytes(xe, ye)),
    }


def _body(inputs: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "teacher_ids": [inputs["teacher"]],
        "dataset_id": inputs["transfer"],
        "eval_dataset_id": inputs["eval"],
        **FAST,
        **extra,
    }


def _finished(client: TestClient, job_id: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return dict(wait_for(done, timeout=timeout, interval=0.5))
