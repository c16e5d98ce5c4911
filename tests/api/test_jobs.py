"""Jobs through HTTP with real worker processes (validate + gpu queues) on Postgres and Redis."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.api.conftest import _body, _finished, _ready
from tests.conftest import wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    """This module shares its uploads across tests (see tests/api/conftest.py)."""
    return jobs_client


def test_job_succeeds_and_its_report_matches_the_downloaded_student(
    client: TestClient, inputs: dict[str, str], gpu_worker: object, tmp_path: Path
) -> None:
    import onnxruntime as ort

    resp = client.post("/v1/jobs", json=_body(inputs))
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["spec"]["distillation"]["temperature"] == 4.0
    job = _finished(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["stage"] is None
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report == job["report"]

    students = {}
    for fmt in ("onnx", "torch_export", "safetensors", "onnx_fp16", "onnx_int8"):
        resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": fmt})
        assert resp.status_code == 200
        assert resp.headers["etag"] == f'"{hashlib.sha256(resp.content).hexdigest()}"'
        assert "attachment" in resp.headers["content-disposition"]
        students[fmt] = resp.content
    path = tmp_path / "student.onnx"
    path.write_bytes(students["onnx"])

    _, _, xe, ye = digits()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    student_logits = session.run(None, {session.get_inputs()[0].name: xe})[0]
    teacher = _teacher_logits(xe)
    agreement = float(np.mean(student_logits.argmax(1) == teacher.argmax(1)))
    accuracy = float(np.mean(student_logits.argmax(1) == ye))
    assert report["eval_samples"] == len(xe)
    assert abs(report["agreement_top1"] - agreement) < 1e-6
    assert abs(report["student_accuracy"] - accuracy) < 1e-6
    # Parameters as PyTorch counts them on the downloaded program (buffers such as batch-norm
    # statistics are stored too, but are not parameters).
    assert report["student"]["parameters"] == _pt2_parameters(students["torch_export"])
    assert report["compression_ratio"] >= 5
    # Every variant as a user runs it, outside the service: what the report says.
    variants = {v["format"]: v for v in report["variants"]}
    assert set(variants) == set(students)
    for fmt in ("onnx", "onnx_fp16", "onnx_int8"):
        path = tmp_path / f"student-{fmt}.onnx"
        path.write_bytes(students[fmt])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        predicted = session.run(None, {"input": xe})[0].argmax(1)
        assert variants[fmt]["size_bytes"] == len(students[fmt])
        assert variants[fmt]["agreement_top1"] == pytest.approx(
            float(np.mean(predicted == teacher.argmax(1))), abs=1e-9
        )
        assert variants[fmt]["student_accuracy"] == pytest.approx(
            float(np.mean(predicted == ye)), abs=1e-9
        )
    assert variants["onnx_int8"]["size_bytes"] < variants["onnx"]["size_bytes"]
    # It ran in the worker's spare sandbox child (started with the worker, imports done);
    # its private folder is gone and the worker has started the next spare.
    assert report["sandbox"] == {"preloaded": True}
    work = get_settings().data_dir / "work"
    # (The session's validate worker keeps its own two, named for teachers and datasets.)
    assert wait_for(lambda: len(list(work.glob(".spare-*-job-*"))) == 1, timeout=30)


def _teacher_logits(x: np.ndarray) -> np.ndarray:
    import io

    import torch

    program = torch.export.load(io.BytesIO(teacher_pt2_bytes()))  # our own file, in a test
    with torch.inference_mode():
        return np.asarray(program.module()(torch.from_numpy(x)).numpy())


def _pt2_parameters(data: bytes) -> int:
    import io

    import torch

    program = torch.export.load(io.BytesIO(data))  # the service's own output, in a test
    return sum(p.numel() for p in program.module().parameters())


def test_shape_mismatch_is_422_naming_the_field(client: TestClient, inputs: dict[str, str]) -> None:
    x, _, _, _ = digits()
    narrow = _ready(client, "datasets", "narrow.npz", npz_bytes(x[:, :32]))
    resp = client.post("/v1/jobs", json=_body(inputs, dataset_id=narrow))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["errors"][0]["field"] == "dataset_id"
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("extra", "field", "said"),
    [
        ({"student": {"architecture": "mlp", "hidden": [65536] * 8}}, "student", "hidden"),
        ({"preprocessing": {"mean": [0.0], "std": [1e-45]}}, "preprocessing", "std"),
        ({"distillation": {"top_k": 10}}, "distillation.top_k", "10 classes"),
        ({"training": {"epochs": "5"}}, "training.epochs", ""),
        ({"duplicate": True}, "teacher_ids[1]", "already in the ensemble"),
    ],
)
def test_specs_that_could_only_fail_later_are_422_naming_the_field(
    client: TestClient, inputs: dict[str, str], extra: dict[str, Any], field: str, said: str
) -> None:
    body = _body(inputs, **{k: v for k, v in extra.items() if k != "duplicate"})
    if extra.get("duplicate"):
        body["teacher_ids"] = [inputs["teacher"]] * 2
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert any(field in e["field"] and said in e["message"] for e in errors), errors
    assert client.get("/v1/jobs").json()["items"] == []


def test_bad_spec_values_are_422(client: TestClient, inputs: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=_body(inputs, distillation={"temperature": 0}))
    assert resp.status_code == 422
    assert any("temperature" in e["field"] for e in resp.json()["errors"])
    resp = client.post("/v1/jobs", json=_body(inputs, student={"architecture": "cnn"}))
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "student.architecture"


def test_unknown_or_foreign_teacher_is_422(client: TestClient, inputs: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=_body(inputs, teacher_ids=["tch_nope"]))
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "teacher_ids[0]"


def test_idempotency_key_replays_or_conflicts(client: TestClient, inputs: dict[str, str]) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/jobs", json=_body(inputs), headers=headers)
    again = client.post("/v1/jobs", json=_body(inputs), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/jobs", json=_body(inputs, training={"epochs": 4}), headers=headers)
    assert other.status_code == 409
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_cancel_stops_a_running_job_within_seconds(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    body = _body(inputs, training={"epochs": 500, "batch_size": 16})
    job = client.post("/v1/jobs", json=body).json()
    wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["stage"] == "training", 120)
    resp = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    started = time.monotonic()
    job = _finished(client, job["id"], timeout=30)
    assert job["status"] == "cancelled"
    assert time.monotonic() - started < 15
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert client.get(f"/v1/jobs/{job['id']}/student").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/report").status_code == 404


def test_cancel_of_a_queued_job_is_immediate(client: TestClient, inputs: dict[str, str]) -> None:
    job = client.post("/v1/jobs", json=_body(inputs)).json()  # no gpu worker: stays queued
    resp = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    listed = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []


def test_left_out_epochs_are_chosen_from_the_transfer_sets_size(
    client: TestClient, inputs: dict[str, str]
) -> None:
    """1,078 transfer rows at batch 128 are 9 steps an epoch: a request that leaves epochs out
    gets 67 (600 steps); one that gives them keeps them. No gpu worker: the jobs stay queued."""
    body = {k: v for k, v in _body(inputs).items() if k != "training"}
    chosen = [
        client.post("/v1/jobs", json={**body, **extra}).json()
        for extra in ({}, {"training": {"batch_size": 64}}, {"training": {"epochs": 3}})
    ]
    assert [job["spec"]["training"]["epochs"] for job in chosen] == [67, 36, 3]
    assert [job["epochs"] for job in chosen] == [67, 36, 3]
    # Digits are [64] vectors: a small tabular set left to the service also gets MUNGE.
    assert [job["spec"]["augmentation"]["munge"] for job in chosen] == [0.5, 0.5, 0.0]
    from core.spec import JobSpec, TrainingSpec
    from stillhouse._calls import spec_body

    sdk = spec_body(JobSpec(teacher_ids=["t"], dataset_id="d", training=TrainingSpec(seed=1)))
    assert sdk["training"] == {"seed": 1}  # the SDK leaves out what its caller left out


def test_events_stream_progress_then_status_and_resume(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    body = _body(inputs, training={"epochs": 40, "batch_size": 32})
    job = client.post("/v1/jobs", json=body).json()
    events = _read_events(client, job["id"])
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "status" and events[-1]["data"]["status"] == "succeeded"
    assert kinds.count("progress") >= 2
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    stages = {e["data"]["stage"] for e in events if e["event"] == "progress"}
    assert "training" in stages
    # Reconnecting after the end gives the final status at once.
    again = _read_events(client, job["id"], last_event_id=str(ids[-1]))
    assert [e["event"] for e in again] == ["status"]


def _read_events(
    client: TestClient, job_id: str, last_event_id: str | None = None
) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in resp.iter_lines():
            if not line:
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.strip()
    return events


def test_download_supports_range_and_conditional_requests(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    job = _finished(client, client.post("/v1/jobs", json=_body(inputs)).json()["id"])
    url = f"/v1/jobs/{job['id']}/student?format=safetensors"
    full = client.get(url)
    etag, size = full.headers["etag"], len(full.content)
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == full.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == full.content[-5:]
    assert client.get(url, headers={"Range": f"bytes={size}-"}).status_code == 416
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size) and head.headers["etag"] == etag
    bad = client.get(f"/v1/jobs/{job['id']}/student?format=pickle")
    assert bad.status_code == 422
    # One error naming the field and every accepted value, not one per member of the union
    # under pydantic's internal type names.
    assert [e["field"] for e in bad.json()["errors"]] == ["query.format"], bad.json()
    detail = bad.json()["detail"]
    assert "'onnx_int8'" in detail and "'tokenizer'" in detail and "[" not in detail, detail


def test_uploads_in_use_by_a_queued_job_cannot_be_deleted(
    client: TestClient, inputs: dict[str, str]
) -> None:
    job = client.post("/v1/jobs", json=_body(inputs)).json()  # no gpu worker: stays queued
    assert client.delete(f"/v1/teachers/{inputs['teacher']}").status_code == 409
    assert client.delete(f"/v1/datasets/{inputs['transfer']}").status_code == 409
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202


def test_a_job_that_cannot_work_fails_at_once_with_a_reason(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    x, _, _, _ = digits()
    broken = x.copy()
    broken[3, 5] = np.nan
    dataset = _ready(client, "datasets", "nan.npz", npz_bytes(broken))
    job = client.post("/v1/jobs", json=_body(inputs, dataset_id=dataset)).json()
    job = _finished(client, job["id"], timeout=120)
    assert job["status"] == "failed" and job["attempt"] == 1
    assert job["error"]["code"] == "non_finite_inputs"
    assert "NaN" in job["error"]["message"]


def test_a_string_for_a_number_is_422_naming_the_field(
    client: TestClient, inputs: dict[str, str]
) -> None:
    resp = client.post("/v1/jobs", json=_body(inputs, training={"epochs": "5"}))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in resp.json()["errors"]] == ["training.epochs"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_the_openapi_body_of_submit_is_the_full_job_spec(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/JobSpec"
    components = schema["components"]["schemas"]
    spec = components["JobSpec"]
    assert spec["required"] == ["teacher_ids", "dataset_id"]
    assert spec["additionalProperties"] is False
    assert {"student", "distillation", "preprocessing", "training", "export_formats"} <= set(
        spec["properties"]
    )
    assert components["TrainingSpec"]["properties"]["epochs"]["type"] == "integer"
    assert components["ExportFormat"]["enum"] == [
        "torch_export",
        "onnx",
        "safetensors",
        "onnx_fp16",
        "onnx_int8",
    ]
    # "Try it out" pre-fills the ids alone: run as given, every default applies.
    assert body["schema"]["examples"] == [{"teacher_ids": ["tch_..."], "dataset_id": "ds_..."}]
    job = schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]
    read = components[job["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert read["properties"]["report"]["anyOf"][0] == {"$ref": "#/components/schemas/Report"}


def test_a_finished_job_keeps_its_epochs_and_events_then_can_be_deleted(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    job = _finished(client, client.post("/v1/jobs", json=_body(inputs)).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    assert [(r["epoch"], r["attempt"]) for r in rows] == [(1, 1), (2, 1), (3, 1)]
    for row in rows:
        assert set(row) == {
            "epoch",
            "train_loss",
            "soft_loss",
            "hard_loss",
            "eval_agreement",
            "learning_rate",
            "seconds",
            "attempt",
        }
        assert row["hard_loss"] is None  # the transfer set has no labels
        assert row["soft_loss"] == pytest.approx(row["train_loss"])
        assert 0.0 <= row["eval_agreement"] <= 1.0 and row["learning_rate"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    json_accept = {"Accept": "application/json"}
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=json_accept).json()
    assert events["next_cursor"] is None
    kinds = [e["kind"] for e in events["items"]]
    assert kinds[:3] == ["created", "queued", "started"] and kinds[-1] == "succeeded"
    stages = [e["data"]["stage"] for e in events["items"] if e["kind"] == "stage"]
    assert stages == ["soft_labeling", "training", "evaluating", "exporting"]
    assert "checkpoint" in kinds  # every 5 steps in the tests
    ids = [e["id"] for e in events["items"]]
    assert ids == sorted(ids)
    # Pages of two, oldest first, chained by the cursor, give the same list.
    paged, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/jobs/{job['id']}/events", params=params, headers=json_accept)
        paged += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == events["items"]

    key = _artifact_key(job["id"])
    assert key.exists()
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not key.exists()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/metrics").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404


def _artifact_key(job_id: str) -> Path:
    files = get_settings().storage_dir / "students" / job_id
    found = sorted(files.glob("attempt-*/student.onnx"))
    assert found, f"no stored student under {files}"
    return found[0]


def test_an_active_job_cannot_be_deleted(client: TestClient, inputs: dict[str, str]) -> None:
    job = client.post("/v1/jobs", json=_body(inputs)).json()  # no gpu worker: stays queued
    resp = client.delete(f"/v1/jobs/{job['id']}")
    assert resp.status_code == 409
    assert "cancel" in resp.json()["detail"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    cancelled = client.get(f"/v1/jobs/{job['id']}/events", headers={"Accept": "application/json"})
    assert [e["kind"] for e in cancelled.json()["items"]] == ["created", "queued", "cancelled"]
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_the_apis_log_lines_about_a_job_carry_its_id_and_tenant(
    client: TestClient, inputs: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Submitting, cancelling and deleting write lines a JSON log can filter by job."""
    from core.logs import ContextFilter, JsonFormatter

    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level("INFO", logger="api.services.jobs"):
        job = client.post("/v1/jobs", json=_body(inputs)).json()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
        _finished(client, job["id"], timeout=60)
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "api.services.jobs"
    ]
    assert [line["message"].split(" ", 2)[2] for line in lines] == [
        "submitted: 1 teacher(s), 3 epochs",
        "cancel requested",
        "deleted with 0 file(s)",
    ], lines
    assert {line["job_id"] for line in lines} == {job["id"]}
    assert all(line["tenant_id"].startswith("ten_") for line in lines), lines
