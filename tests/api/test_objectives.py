"""kd_jacobian and augmentation through HTTP: a .pt2 teacher distils through the real
worker and sandbox; an ONNX teacher (no input gradients) is refused at submission."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _body, _finished, _ready
from tests.teacher_exports import sklearn_onnx_bytes

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    return jobs_client


@pytest.fixture(scope="module")
def onnx_teacher(shared_client: TestClient) -> str:
    return _ready(shared_client, "teachers", "mlp.onnx", sklearn_onnx_bytes("mlp", zipmap=False))


def test_a_kd_jacobian_job_with_a_pt2_teacher_succeeds_and_says_so(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    body = _body(
        inputs,
        distillation={"loss": "kd_jacobian", "jacobian_weight": 0.5},
        augmentation={"noise": 0.02},  # the digits here are scaled to [0, 1]
        training={"epochs": 8, "batch_size": 64},
        export_formats=["onnx"],
    )
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    assert (report["loss"], report["jacobian_weight"]) == ("kd_jacobian", 0.5)
    assert report["augmentation"] == {
        "shift": 0,
        "flip": False,
        "mixup": 0.0,
        "noise": 0.02,
        "munge": 0.0,
        "munge_scale": 10.0,
    }
    assert report["soft_labels"] == "online"
    assert report["agreement_top1"] > 0.7  # 0.79 measured; a student that learnt


@pytest.mark.parametrize(
    ("extra", "field", "said"),
    [
        ({"distillation": {"loss": "kd_jacobian"}}, "distillation.loss", "onnx"),
        ({"augmentation": {"shift": 2}}, "augmentation.shift", "images"),
        ({"augmentation": {"flip": True}}, "augmentation.flip", "images"),
        ({"augmentation": {"noise": -1.0}}, "augmentation.noise", ""),
        ({"augmentation": {"munge": 1.5}}, "augmentation.munge", ""),
        ({"distillation": {"loss": "sobolev"}}, "distillation.loss", ""),
    ],
)
def test_what_cannot_work_is_422_naming_the_field(
    client: TestClient,
    inputs: dict[str, str],
    onnx_teacher: str,
    extra: dict[str, Any],
    field: str,
    said: str,
) -> None:
    body = _body(inputs, teacher_ids=[onnx_teacher], **extra)
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert any(field in e["field"] and said in e["message"] for e in errors), errors
    assert client.get("/v1/jobs").json()["items"] == []
