"""A Hugging Face model folder through the service: uploaded as a ZIP, validated in the
sandbox (its tokenizer.json becomes the teacher's), distilled from raw CSV and Parquet text
by real workers, the downloaded student run with onnxruntime; a second job maps the text
tokenized by the first; hostile folders rejected with their code."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.api.conftest import _finished, _ready
from tests.conftest import wait_for
from tests.engine.text_helpers import (
    CLASSES,
    LENGTH,
    VOCAB,
    hf_folder,
    token_set,
    tokenizer_json,
)


@pytest.fixture
def client(jobs_client: TestClient) -> Iterator[TestClient]:
    yield jobs_client


def _upload(client: TestClient, data: bytes) -> dict[str, Any]:
    resp = client.post("/v1/teachers", files={"file": ("model.zip", data)})
    assert resp.status_code == 201, resp.text
    teacher_id = resp.json()["id"]

    def validated() -> dict[str, Any] | None:
        teacher = client.get(f"/v1/teachers/{teacher_id}").json()
        return None if teacher["status"] == "validating" else dict(teacher)

    return dict(wait_for(validated, timeout=120))


def _table(data: dict[str, np.ndarray]) -> pa.Table:
    texts = [
        " ".join(f"w{i}" for i, m in zip(ids, mask, strict=True) if m)
        for ids, mask in zip(data["input_ids"], data["attention_mask"], strict=True)
    ]
    return pa.table({"text": texts, "label": data["label"].tolist()})


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_model_folder_distils_raw_text_into_a_drop_in_student(
    client: TestClient, gpu_worker: object, tmp_path: Path
) -> None:
    import onnxruntime as ort

    teacher = _upload(client, hf_folder(tmp_path).read_bytes())
    assert teacher["status"] == "ready", teacher["error"]
    assert teacher["format"] == "hf" and teacher["input_kind"] == "tokens"
    assert teacher["task"] == "classification" and teacher["num_classes"] == CLASSES
    names = [i["name"] for i in teacher["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    assert teacher["tokenizer"]["vocab_size"] == VOCAB
    assert teacher["tokenizer"]["max_length"] == LENGTH

    csv_bytes = io.BytesIO()
    pacsv.write_csv(_table(token_set(400, 1)), csv_bytes)
    held_set = token_set(120, 2)
    parquet_bytes = io.BytesIO()
    pq.write_table(_table(held_set), parquet_bytes)
    transfer = _ready(client, "datasets", "train.csv", csv_bytes.getvalue())
    evalset = _ready(client, "datasets", "eval.parquet", parquet_bytes.getvalue())
    for dataset_id, fmt in ((transfer, "csv"), (evalset, "parquet")):
        described = client.get(f"/v1/datasets/{dataset_id}").json()
        assert described["format"] == fmt and described["kind"] == "text"

    body = {
        "teacher_ids": [teacher["id"]],
        "dataset_id": transfer,
        "eval_dataset_id": evalset,
        "student": {"architecture": "text_cnn", "size_ratio": 0.5},
        "training": {"epochs": 3, "batch_size": 32},
    }

    def token_files() -> list[Path]:
        # Other tests of the session (one data folder) tokenize text too: theirs are older.
        found = get_settings().storage_dir.glob("softlabels/*/tokens-*/*.npy")
        return sorted(set(found) - before)

    before = set(get_settings().storage_dir.glob("softlabels/*/tokens-*/*.npy"))
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    report = job["report"]
    assert report["sequence_length"] == LENGTH
    assert report["teacher"]["latency_ms_batch1"] > 0

    path = tmp_path / "student.onnx"
    path.write_bytes(client.get(f"/v1/jobs/{job['id']}/student").content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    feed = {
        "input_ids": held_set["input_ids"],
        "attention_mask": held_set["attention_mask"],
        "token_type_ids": np.zeros_like(held_set["input_ids"]),
    }
    predicted = session.run(None, feed)[0].argmax(1)
    accuracy = float(np.mean(predicted == held_set["label"]))
    assert abs(report["student_accuracy"] - accuracy) < 1e-6
    resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "tokenizer"})
    assert resp.status_code == 200 and resp.text == tokenizer_json()

    # The text was tokenized once, into the cache folder of this teacher and data ...
    cached = token_files()
    assert len([p for p in cached if p.name == "input_ids.npy"]) == 2, cached
    written = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached}
    # ... and a second job maps those arrays: not one is written again.
    resp = client.post("/v1/jobs", json={**body, "training": {"epochs": 1, "batch_size": 32}})
    again = _finished(client, resp.json()["id"], timeout=900)
    assert again["status"] == "succeeded", again["error"]
    assert token_files() == cached
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached} == written


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"extra": {"pytorch_model.bin": pickle.dumps(_Boom())}}, "unsafe_model_file"),
        ({"extra": {"modeling_evil.py": b"import os\n"}}, "unsafe_model_file"),
        ({"config": {"architectures": ["BertForMaskedLM"]}}, "unsupported_architecture"),
        ({"config": {"auto_map": {"AutoModel": "evil.Model"}}}, "remote_code"),
        ({"config": {"trust_remote_code": True}}, "remote_code"),
    ],
)
def test_hostile_model_folders_are_rejected_with_their_code(
    client: TestClient, tmp_path: Path, kwargs: dict[str, Any], code: str
) -> None:
    teacher = _upload(client, hf_folder(tmp_path, **kwargs).read_bytes())
    assert teacher["status"] == "rejected"
    assert teacher["error"]["code"] == code, teacher["error"]
    resp = client.get(f"/problems/{code}")
    assert resp.status_code == 200


def test_a_tokenizer_part_over_the_cap_is_a_413_before_it_is_read(client: TestClient) -> None:
    cap = get_settings().max_form_tokenizer_bytes
    merges = b'{"model": {"type": "BPE", "merges": [' + b'"a b",' * (cap // 6) + b'"a b"]}}'
    assert len(merges) > cap
    before = client.get("/v1/teachers").json()["items"]
    files = {"file": ("t.onnx", b"\x08\x07"), "tokenizer": ("tokenizer.json", merges)}
    resp = client.post("/v1/teachers", files=files)
    assert resp.status_code == 413, resp.text
    assert client.get("/v1/teachers").json()["items"] == before
