"""Token teachers through the service: an ONNX text classifier with input_ids and
attention_mask, a token-id .npz, real workers, the downloaded student run with onnxruntime
on the teacher's named inputs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.api.conftest import _finished, _ready
from tests.conftest import wait_for
from tests.engine.text_helpers import (
    VOCAB,
    export_onnx,
    jsonl_text,
    token_set,
    tokenizer_json,
    train_teacher,
)


@lru_cache(maxsize=1)
def _teacher_onnx() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(train_teacher(), Path(tmp) / "t.onnx").read_bytes()


def _npz(data: dict[str, np.ndarray], *names: str) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{name: data[name] for name in names})
    return buf.getvalue()


@pytest.fixture(scope="module")
def text_inputs(shared_client: TestClient) -> dict[str, str]:
    train, held = token_set(600, 1), token_set(200, 2)
    client = shared_client
    return {
        "teacher": _ready(client, "teachers", "text.onnx", _teacher_onnx()),
        "transfer": _ready(client, "datasets", "tokens.npz", _npz(train, "input_ids")),
        "eval": _ready(
            client, "datasets", "eval.npz", _npz(held, "input_ids", "attention_mask", "label")
        ),
        "plain": _ready(client, "datasets", "x.npz", _npz({"x": train["input_ids"]}, "x")),
    }


@pytest.fixture
def client(jobs_client: TestClient) -> Iterator[TestClient]:
    yield jobs_client


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_token_teacher_and_dataset_are_described(
    client: TestClient, text_inputs: dict[str, str]
) -> None:
    teacher = client.get(f"/v1/teachers/{text_inputs['teacher']}").json()
    assert teacher["input_kind"] == "tokens" and teacher["task"] == "classification"
    assert [i["name"] for i in teacher["inputs"]] == ["input_ids", "attention_mask"]
    assert teacher["input_shape"] == [None, None] and teacher["input_dtype"] == "int64"
    dataset = client.get(f"/v1/datasets/{text_inputs['eval']}").json()
    assert dataset["kind"] == "tokens"
    assert dataset["inputs"] == ["attention_mask", "input_ids"]
    assert dataset["num_classes"] == 3
    resp = client.post(
        "/v1/jobs",
        json={"teacher_ids": [text_inputs["teacher"]], "dataset_id": text_inputs["plain"]},
    )
    assert resp.status_code == 422 and "dataset_id" in resp.text
    resp = client.post(
        "/v1/jobs",
        json={
            "teacher_ids": [text_inputs["teacher"]],
            "dataset_id": text_inputs["transfer"],
            "student": {"architecture": "mlp"},
        },
    )
    assert resp.status_code == 422 and "student.architecture" in resp.text


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_text_student_through_the_service_is_a_drop_in_onnx(
    client: TestClient, text_inputs: dict[str, str], gpu_worker: object, tmp_path: Path
) -> None:
    import onnxruntime as ort

    body = {
        "teacher_ids": [text_inputs["teacher"]],
        "dataset_id": text_inputs["transfer"],
        "eval_dataset_id": text_inputs["eval"],
        "student": {"size_ratio": 0.5},
        "training": {"epochs": 12, "batch_size": 32, "learning_rate": 3e-3},
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    assert report["student_architecture"]["architecture"] == "text_cnn"
    assert report["sequence_length"] == 12

    resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "onnx"})
    assert resp.status_code == 200
    path = tmp_path / "student.onnx"
    path.write_bytes(resp.content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    held = token_set(200, 2)
    feed = {"input_ids": held["input_ids"], "attention_mask": held["attention_mask"]}
    predicted = session.run(None, feed)[0].argmax(1)
    assert abs(report["student_accuracy"] - float(np.mean(predicted == held["label"]))) < 1e-6
    assert report["agreement_top1"] > 0.7


def _teacher_with_tokenizer(client: TestClient, tokenizer: str) -> dict[str, object]:
    files = {"file": ("text.onnx", _teacher_onnx()), "tokenizer": ("tokenizer.json", tokenizer)}
    resp = client.post("/v1/teachers", files=files)
    assert resp.status_code == 201, resp.text
    teacher_id = resp.json()["id"]

    def validated() -> dict[str, object] | None:
        teacher = client.get(f"/v1/teachers/{teacher_id}").json()
        return None if teacher["status"] == "validating" else dict(teacher)

    return dict(wait_for(validated, timeout=90))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tokenizer_part_is_read_and_downloaded_with_the_job(
    client: TestClient, text_inputs: dict[str, str]
) -> None:
    tokenizer = tokenizer_json()
    teacher = _teacher_with_tokenizer(client, tokenizer)
    assert teacher["status"] == "ready", teacher["error"]
    info = teacher["tokenizer"]
    assert isinstance(info, dict) and info["vocab_size"] == VOCAB and info["max_length"] == 12
    body = {"teacher_ids": [teacher["id"]], "dataset_id": text_inputs["transfer"]}
    job = client.post("/v1/jobs", json=body).json()
    resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "tokenizer"})
    assert resp.status_code == 200 and resp.text == tokenizer
    plain = {"teacher_ids": [text_inputs["teacher"]], "dataset_id": text_inputs["transfer"]}
    other = client.post("/v1/jobs", json=plain).json()
    resp = client.get(f"/v1/jobs/{other['id']}/student", params={"format": "tokenizer"})
    assert resp.status_code == 404
    # Deleting the teacher deletes its tokenizer's bytes too (nothing left to count or leak).
    tokenizers = get_settings().storage_dir / "tokenizers"
    before = {p for p in tokenizers.rglob("*") if p.is_file()}
    for made in (job, other):
        client.post(f"/v1/jobs/{made['id']}/cancel")
    assert client.delete(f"/v1/teachers/{teacher['id']}").status_code == 204
    after = {p for p in tokenizers.rglob("*") if p.is_file()}
    assert len(before - after) == 1 and after <= before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tokenizer_larger_than_the_embedding_rejects_the_teacher(
    client: TestClient, text_inputs: dict[str, str]
) -> None:
    teacher = _teacher_with_tokenizer(client, tokenizer_json(VOCAB + 40))
    assert teacher["status"] == "rejected"
    assert teacher["error"]["code"] == "tokenizer_mismatch"  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_raw_jsonl_text_through_the_service_to_a_drop_in_student(
    client: TestClient, gpu_worker: object, tmp_path: Path
) -> None:
    import onnxruntime as ort

    tokenizer = tokenizer_json()
    teacher = _teacher_with_tokenizer(client, tokenizer)
    assert teacher["status"] == "ready", teacher["error"]
    train = jsonl_text(token_set(600, 1), tmp_path / "train.jsonl").read_bytes()
    held_set = token_set(200, 2)
    held = jsonl_text(held_set, tmp_path / "eval.jsonl").read_bytes()
    transfer = _ready(client, "datasets", "train.jsonl", train)
    evalset = _ready(client, "datasets", "eval.jsonl", held)
    described = client.get(f"/v1/datasets/{evalset}").json()
    assert described["format"] == "jsonl" and described["kind"] == "text"
    body = {
        "teacher_ids": [teacher["id"]],
        "dataset_id": transfer,
        "eval_dataset_id": evalset,
        "student": {"size_ratio": 0.5},
        "training": {"epochs": 12, "batch_size": 32, "learning_rate": 3e-3},
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    assert report["sequence_length"] == 12
    path = tmp_path / "student.onnx"
    path.write_bytes(client.get(f"/v1/jobs/{job['id']}/student").content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": held_set["input_ids"], "attention_mask": held_set["attention_mask"]}
    predicted = session.run(None, feed)[0].argmax(1)
    accuracy = float(np.mean(predicted == held_set["label"]))
    assert abs(report["student_accuracy"] - accuracy) < 1e-6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_text_dataset_with_a_teacher_without_tokenizer_is_a_422(
    client: TestClient, text_inputs: dict[str, str], tmp_path: Path
) -> None:
    text = jsonl_text(token_set(40, 1), tmp_path / "t.jsonl").read_bytes()
    dataset = _ready(client, "datasets", "t.jsonl", text)
    body = {"teacher_ids": [text_inputs["teacher"]], "dataset_id": dataset}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422 and "dataset_id" in resp.text
