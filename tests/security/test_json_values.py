"""Values JSON cannot hold: ``NaN``, ``Infinity`` and lone UTF-16 surrogates.

The audit sent ``NaN`` in ``preprocessing`` (accepted; the job failed later with pydantic
class names in its message) and a lone surrogate in an id (a 500). Each is now a 422 that
names the field.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.spec import JobSpec

JSON = {"content-type": "application/json"}


def _invalid(resp: Any) -> list[str]:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in resp.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'"preprocessing": {"mean": [NaN], "std": [1.0]}', "preprocessing.mean.0"),
        (b'"preprocessing": {"mean": [0.5], "std": [Infinity]}', "preprocessing.std.0"),
        (b'"training": {"learning_rate": -Infinity}', "training.learning_rate"),
        (b'"distillation": {"temperature": NaN}', "distillation.temperature"),
    ],
)
def test_non_finite_numbers_in_a_job_spec_are_422_naming_the_field(
    client: TestClient, body: bytes, field: str
) -> None:
    raw = b'{"teacher_ids": ["tch_x"], "dataset_id": "ds_x", ' + body + b"}"
    assert _invalid(client.post("/v1/jobs", content=raw, headers=JSON)) == [field]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"teacher_ids": ["tch_\\ud800"], "dataset_id": "ds_x"}', "teacher_ids.0"),
        (b'{"teacher_ids": ["tch_x"], "dataset_id": "\\udfff"}', "dataset_id"),
        (b'{"teacher_ids": ["t"], "dataset_id": "d", "eval_dataset_id": "\\udc80"}',
         "eval_dataset_id"),
        (b'{"teacher_ids": ["t"], "dataset_id": "d", "x\\ud800": 1}', "x\\ud800"),
    ],
)  # fmt: skip
def test_lone_surrogates_in_a_job_spec_are_422_naming_the_field(
    client: TestClient, raw: bytes, field: str
) -> None:
    assert _invalid(client.post("/v1/jobs", content=raw, headers=JSON)) == [field]


def test_lone_surrogates_in_other_bodies_are_422(client: TestClient) -> None:
    resp = client.post("/v1/keys", content=b'{"name": "a\\udc80", "scope": "read"}', headers=JSON)
    assert _invalid(resp) == ["name"]
    hook = b'{"url": "https://example.com/\\ud800", "events": ["job.failed"]}'
    assert _invalid(client.post("/v1/webhooks", content=hook, headers=JSON)) == ["url"]


@pytest.mark.parametrize(
    "path", ["/v1/jobs/job_%ED%A0%80", "/v1/teachers/%ED%B2%80", "/v1/datasets/%F0%90"]
)
def test_surrogate_bytes_in_an_id_are_a_404_not_a_500(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_engine_refuses_a_non_finite_spec_too() -> None:
    """The worker validates the stored spec again: NaN can never reach training."""
    spec = {"teacher_ids": ["t"], "dataset_id": "d", "augmentation": {"noise": float("nan")}}
    with pytest.raises(ValidationError, match="finite"):
        JobSpec.model_validate(spec)


def test_every_json_body_of_the_api_is_checked(client: TestClient) -> None:
    """Each operation of the OpenAPI document that takes JSON refuses NaN, by field."""
    operations = [
        (method, path)
        for path, item in client.get("/openapi.json").json()["paths"].items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert ("post", "/v1/jobs") in operations
    for method, path in operations:
        url = re.sub(r"\{[^}]+\}", "x", path)
        resp = client.request(method.upper(), url, content=b'{"nan": [NaN]}', headers=JSON)
        assert _invalid(resp) == ["nan.0"], (method, path)
