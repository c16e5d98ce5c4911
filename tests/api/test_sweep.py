"""Sweeps and hard-label baselines through HTTP, with real worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.contracts import Candidate
from engine.sweep import pareto_front
from tests.api.conftest import _body, _finished, _ready
from tests.api.test_jobs import _teacher_logits
from tests.factories import digits, npz_bytes

SWEEP = {"temperature": [2.0, 6.0], "size_ratio": [0.05, 0.3]}

# Real jobs and deliveries through worker processes: not in the fast lane.
pytestmark = pytest.mark.slow


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    return jobs_client


def _agreement(onnx: bytes, tmp: Path) -> tuple[float, float]:
    """(agreement with the teacher, accuracy) of a downloaded ONNX student on the eval set."""
    import onnxruntime as ort

    path = tmp / "student.onnx"
    path.write_bytes(onnx)
    _, _, xe, ye = digits()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: xe})[0]
    teacher = _teacher_logits(xe)
    return (
        float(np.mean(logits.argmax(1) == teacher.argmax(1))),
        float(np.mean(logits.argmax(1) == ye)),
    )


@pytest.mark.slow
def test_a_sweep_reports_its_candidates_and_each_downloads_as_measured(
    client: TestClient, inputs: dict[str, str], gpu_worker: object, tmp_path: Path
) -> None:
    body = _body(inputs, sweep=SWEEP, export_formats=["onnx"])
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=400)
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    candidates, chosen = report["candidates"], report["chosen"]
    assert [(c["temperature"], c["size_ratio"]) for c in candidates] == [
        (2.0, 0.05),
        (2.0, 0.3),
        (6.0, 0.05),
        (6.0, 0.3),
    ]
    assert job["student_formats"] == ["onnx"]
    url = f"/v1/jobs/{job['id']}/student"
    for index in sorted({0, chosen}):
        resp = client.get(url, params={"format": "onnx", "candidate": index})
        assert resp.status_code == 200, resp.text
        agreement, accuracy = _agreement(resp.content, tmp_path)
        assert abs(candidates[index]["agreement_top1"] - agreement) < 1e-6
        assert abs(candidates[index]["student_accuracy"] - accuracy) < 1e-6
    default = client.get(url, params={"format": "onnx"})
    chosen_file = client.get(url, params={"format": "onnx", "candidate": chosen})
    assert default.content == chosen_file.content  # old clients get the chosen one
    assert abs(report["agreement_top1"] - _agreement(default.content, tmp_path)[0]) < 1e-6
    assert client.get(url, params={"format": "onnx", "candidate": 4}).status_code == 404
    assert client.get(url, params={"format": "onnx", "candidate": -1}).status_code == 422
    # The Pareto flags are the front of what was reported (tests/engine/test_sweep.py
    # checks the rule itself).
    front = pareto_front([Candidate.model_validate(c) for c in candidates])
    assert [c["pareto"] for c in candidates] == front


@pytest.mark.slow
def test_a_baseline_states_what_distillation_bought(
    client: TestClient, inputs: dict[str, str], gpu_worker: object
) -> None:
    x, y, _, _ = digits()
    labelled = _ready(client, "datasets", "labelled.npz", npz_bytes(x, y))
    body = _body(inputs, dataset_id=labelled, baseline=True, export_formats=["onnx"])
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    base, gain = report["baseline"], report["distillation_gain"]
    assert base["parameters"] == report["student"]["parameters"]
    assert gain["student_accuracy"] == pytest.approx(
        report["student_accuracy"] - base["student_accuracy"]
    )
    assert gain["agreement_top1"] == pytest.approx(
        report["agreement_top1"] - base["agreement_top1"]
    )


@pytest.mark.parametrize(
    ("extra", "field", "said"),
    [
        (
            {
                "sweep": {
                    "temperature": [1.0, 2.0, 4.0, 8.0],
                    "alpha": [0.0, 0.5, 1.0],
                    "size_ratio": [0.1, 0.2, 0.3],
                }
            },
            "sweep",
            "36 combinations",
        ),
        ({"sweep": {"temperature": []}}, "sweep.temperature", ""),
        ({"sweep": {"alpha": [1.5]}}, "sweep.alpha", ""),
        (
            {"sweep": {"temperature": [2.0]}, "distillation": {"soft_labels": "online"}},
            "sweep",
            "cached",
        ),
        (
            {"sweep": {"temperature": [2.0, 4.0]}, "augmentation": {"noise": 0.01}},
            "sweep",
            "no augmentation",
        ),
        (
            {"sweep": {"size_ratio": [0.1, 0.2]}, "student": {"max_parameters": 500}},
            "sweep.size_ratio",
            "same student",
        ),
        ({"baseline": True}, "baseline", "no labels"),
    ],
)
def test_sweeps_and_baselines_that_cannot_work_are_422_naming_the_field(
    client: TestClient, inputs: dict[str, str], extra: dict[str, Any], field: str, said: str
) -> None:
    resp = client.post("/v1/jobs", json=_body(inputs, **extra))
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert any(e["field"].startswith(field) and said in e["message"] for e in errors), errors
    assert client.get("/v1/jobs").json()["items"] == []
