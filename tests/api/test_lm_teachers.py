"""Language-model teachers through the service: a tiny causal LM in ONNX (input_ids,
attention_mask → logits [N, L, vocab]), a token .npz, real workers; the downloaded gpt
student run with onnxruntime gives the reported perplexity."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _finished, _ready
from tests.engine.lm_helpers import VOCAB, export_onnx, lm_set, train_lm
from tests.engine.test_lm_engine import perplexity_with_onnxruntime
from tests.engine.text_helpers import export_onnx as export_classifier
from tests.engine.text_helpers import token_set, train_teacher


@lru_cache(maxsize=1)
def _lm_onnx() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(train_lm(), Path(tmp) / "lm.onnx").read_bytes()


def _npz(data: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def lm_inputs(shared_client: TestClient) -> dict[str, str]:
    client = shared_client
    with tempfile.TemporaryDirectory() as tmp:
        classifier = export_classifier(train_teacher(), Path(tmp) / "c.onnx").read_bytes()
    return {
        "teacher": _ready(client, "teachers", "lm.onnx", _lm_onnx()),
        "classifier": _ready(client, "teachers", "c.onnx", classifier),
        "transfer": _ready(client, "datasets", "tokens.npz", _npz(lm_set(300, 1))),
        "eval": _ready(client, "datasets", "eval.npz", _npz(lm_set(80, 2))),
        "labelled": _ready(
            client,
            "datasets",
            "labelled.npz",
            _npz({k: v for k, v in token_set(100, 1).items()}),
        ),
    }


@pytest.fixture
def client(jobs_client: TestClient) -> Iterator[TestClient]:
    yield jobs_client


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_language_model_is_described_and_its_jobs_checked(
    client: TestClient, lm_inputs: dict[str, str]
) -> None:
    teacher = client.get(f"/v1/teachers/{lm_inputs['teacher']}").json()
    assert teacher["task"] == "language_model" and teacher["input_kind"] == "tokens"
    assert teacher["num_classes"] == VOCAB and teacher["vocab_size"] == VOCAB
    base = {"teacher_ids": [lm_inputs["teacher"]], "dataset_id": lm_inputs["transfer"]}
    for extra, field in (
        ({"student": {"architecture": "transformer"}}, "student.architecture"),
        ({"distillation": {"loss": "kd_jacobian"}}, "distillation.loss"),
        ({"sweep": {"temperature": [1.0, 2.0]}}, "sweep"),
    ):
        resp = client.post("/v1/jobs", json={**base, **extra})
        assert resp.status_code == 422 and field in resp.text, (extra, resp.text)
    # The sequence losses and the gpt student are a language model's only.
    classifier = {"teacher_ids": [lm_inputs["classifier"]], "dataset_id": lm_inputs["labelled"]}
    resp = client.post("/v1/jobs", json={**classifier, "distillation": {"loss": "jsd"}})
    assert resp.status_code == 422 and "distillation.loss" in resp.text
    resp = client.post("/v1/jobs", json={**classifier, "student": {"architecture": "gpt"}})
    assert resp.status_code == 422 and "student.architecture" in resp.text


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_language_model_job_through_the_service(
    client: TestClient, lm_inputs: dict[str, str], gpu_worker: object, tmp_path: Path
) -> None:
    body = {
        "teacher_ids": [lm_inputs["teacher"]],
        "dataset_id": lm_inputs["transfer"],
        "eval_dataset_id": lm_inputs["eval"],
        "student": {"size_ratio": 0.5},
        "training": {"epochs": 10, "batch_size": 32, "learning_rate": 1e-2, "seed": 3},
        "distillation": {"loss": "jsd", "beta": 0.5, "temperature": 2.0, "alpha": 0.2},
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    assert report["task"] == "language_model"
    assert report["student_architecture"]["architecture"] == "gpt"
    # top_k is 64 by default: here all of the small vocabulary (no rest bucket).
    assert report["top_k"] == VOCAB and report["loss"] == "jsd" and report["beta"] == 0.5
    assert report["agreement_top1"] == report["next_token_agreement"] > 0.8
    assert report["student"]["tokens_per_s"] > 0

    resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "onnx"})
    assert resp.status_code == 200
    path = tmp_path / "student.onnx"
    path.write_bytes(resp.content)
    held = lm_set(80, 2)
    assert perplexity_with_onnxruntime(path, held) == pytest.approx(
        report["student_perplexity"], rel=1e-4
    )
    # Every default variant was made and measured, int8 included (dynamic, as for text).
    assert {v["format"] for v in report["variants"]} >= {"onnx", "onnx_fp16", "onnx_int8"}
