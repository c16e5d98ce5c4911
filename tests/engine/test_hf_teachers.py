"""A Hugging Face model folder as a teacher: vetted, loaded by its allow-listed class from
safetensors, described like a token ONNX teacher, distilled from raw text with the folder's
own tokenizer; hostile folders refused with the member or key named."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from core.contracts import FileRef
from core.errors import ErrorCode
from core.formats import sniff_teacher
from core.spec import JobSpec
from engine.engine import run_distillation
from engine.errors import UserError
from engine.hf import ARCHITECTURES
from engine.teachers import inspect_teacher, load_teacher
from tests.engine.text_helpers import (
    CLASSES,
    LENGTH,
    VOCAB,
    hf_folder,
    jsonl_text,
    token_set,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf_folder(tmp_path_factory.mktemp("hf"))


def test_a_model_folder_is_described_like_a_token_onnx_teacher(folder: Path) -> None:
    assert sniff_teacher(folder) == "hf"
    info = inspect_teacher(folder, "hf")
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["dtype"] == "int64" and i["shape"] == [None, None] for i in info["inputs"])
    assert info["input_kind"] == "tokens" and info["task"] == "classification"
    assert info["num_classes"] == CLASSES and info["vocab_size"] == VOCAB
    assert 50_000 < info["parameters"] < 500_000
    assert info["tokenizer"]["vocab_size"] == VOCAB and info["tokenizer"]["max_length"] == LENGTH
    text = info["tokenizer_json"]
    assert hashlib.sha256(text.encode()).hexdigest() == info["tokenizer"]["sha256"]


def test_the_teacher_computes_what_transformers_computes(folder: Path, tmp_path: Path) -> None:
    import torch
    from transformers import BertForSequenceClassification

    with zipfile.ZipFile(folder) as archive:
        archive.extractall(tmp_path)
    reference = BertForSequenceClassification.from_pretrained(tmp_path / "my-model").eval()
    teacher = load_teacher(folder, "hf")
    data = token_set(8, 5)
    ids, mask = torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])
    stacked = torch.stack([ids, mask, torch.zeros_like(ids)], 1).float()
    with torch.inference_mode():
        expected = reference(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(teacher(stacked), expected, rtol=1e-4, atol=1e-5)


def test_raw_text_distils_into_a_drop_in_onnx_student(folder: Path, tmp_path: Path) -> None:
    train = jsonl_text(token_set(400, 1), tmp_path / "train.jsonl")
    held_set = token_set(120, 2)
    held = jsonl_text(held_set, tmp_path / "eval.jsonl")
    spec = JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "student": {"architecture": "text_cnn", "size_ratio": 0.5},
            "training": {"epochs": 3, "batch_size": 32, "seed": 1},
            "export_formats": ["onnx"],
        }
    )
    # No tokenizer given: the folder's own tokenizes the text.
    result = run_distillation(
        [FileRef.of(folder, "hf")],
        FileRef.of(train, "jsonl"),
        FileRef.of(held, "jsonl"),
        spec,
        workdir=tmp_path / "work",
        cache_dir=tmp_path / "cache",
    )
    report = result.report
    assert report.sequence_length == LENGTH
    teacher = report.teacher
    assert teacher.latency_ms_batch1 > 0 and teacher.throughput_per_s > 0
    assert report.speedup > 0
    session = ort.InferenceSession(str(result.files["onnx"]), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    feed = {
        "input_ids": held_set["input_ids"],
        "attention_mask": held_set["attention_mask"],
        "token_type_ids": np.zeros_like(held_set["input_ids"]),
    }
    predicted = session.run(None, feed)[0].argmax(1)
    accuracy = float(np.mean(predicted == held_set["label"]))
    assert abs(report.student_accuracy - accuracy) < 1e-6


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        (
            {"extra": {"pytorch_model.bin": pickle.dumps(_Boom())}},
            ErrorCode.UNSAFE_MODEL_FILE,
            "pytorch_model.bin",
        ),
        (
            {"extra": {"modeling_evil.py": b"import os\n"}},
            ErrorCode.UNSAFE_MODEL_FILE,
            "modeling_evil.py",
        ),
        ({"extra": {"weights.pkl": b"\x80\x04."}}, ErrorCode.UNSAFE_MODEL_FILE, "weights.pkl"),
        ({"extra": {"sub/config.json": b"{}"}}, ErrorCode.UNSAFE_MODEL_FILE, "sub/config.json"),
        (
            {"config": {"architectures": ["BertForMaskedLM"]}},
            ErrorCode.UNSUPPORTED_ARCHITECTURE,
            "BertForMaskedLM",
        ),
        ({"config": {"auto_map": {"AutoModel": "evil.Model"}}}, ErrorCode.REMOTE_CODE, "auto_map"),
        ({"config": {"trust_remote_code": True}}, ErrorCode.REMOTE_CODE, "trust_remote_code"),
        (
            {"config": {"_attn_implementation_internal": "kernels-community/evil"}},
            ErrorCode.REMOTE_CODE,
            "_attn_implementation",
        ),
        ({"config": {"model_type": "gpt2"}}, ErrorCode.BAD_TEACHER, "model_type"),
        (
            {"config": {"num_labels": 5, "id2label": {str(i): str(i) for i in range(5)}}},
            ErrorCode.BAD_TEACHER,
            "does not fit",
        ),
    ],
)
def test_hostile_or_broken_folders_are_refused(
    tmp_path: Path, kwargs: dict[str, object], code: ErrorCode, words: str
) -> None:
    path = hf_folder(tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserError) as error:
        inspect_teacher(path, "hf")
    assert error.value.code == code, error.value.message
    assert words in error.value.message


def test_weights_without_the_classification_head_are_refused(tmp_path: Path, folder: Path) -> None:
    from safetensors.torch import load, save

    path = tmp_path / "headless.zip"
    with zipfile.ZipFile(folder) as src, zipfile.ZipFile(path, "w") as dst:
        for member in src.infolist():
            data = src.read(member)
            if member.filename.endswith(".safetensors"):
                weights = {k: v for k, v in load(data).items() if not k.startswith("classifier")}
                data = save(weights)
            dst.writestr(member, data)
    with pytest.raises(UserError) as error:
        inspect_teacher(path, "hf")
    assert error.value.code == ErrorCode.BAD_TEACHER and "classifier" in error.value.message


def test_a_traversing_member_is_refused(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(folder) as src, zipfile.ZipFile(path, "w") as dst:
        for member in src.infolist():
            dst.writestr(member, src.read(member))
        dst.writestr("my-model/../../etc/x.json", b"{}")
    with pytest.raises(UserError) as error:
        inspect_teacher(path, "hf")
    assert error.value.code == ErrorCode.ARCHIVE_TRAVERSAL


def test_the_allow_list_names_classifiers_and_language_models_that_exist() -> None:
    import transformers

    assert {"classification", "language_model"} == set(ARCHITECTURES.values())
    missing = [name for name in ARCHITECTURES if not hasattr(transformers, name)]
    assert not missing
    assert json.dumps(ARCHITECTURES)  # one plain table, in one place


def test_a_causal_language_model_is_described_as_one(tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).eval().save_pretrained(tmp_path / "gpt")
    path = tmp_path / "gpt.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in (tmp_path / "gpt").iterdir():
            archive.write(member, member.name)  # at the top, no folder
    assert sniff_teacher(path) == "hf"
    info = inspect_teacher(path, "hf")
    assert info["task"] == "language_model" and info["input_kind"] == "tokens"
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask"]
    assert info["num_classes"] == VOCAB and info["vocab_size"] == VOCAB
    assert info["output_name"] == "logits" and "tokenizer" not in info


def test_token_rows_longer_than_the_position_embeddings_name_the_dataset(
    folder: Path, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"input_ids": [[2] * 80, [3] * 10]}), path)  # the model takes 64
    spec = JobSpec.model_validate({"teacher_ids": ["t"], "dataset_id": "d"})
    with pytest.raises(UserError) as error:
        run_distillation(
            [FileRef.of(folder, "hf")],
            FileRef.of(path, "parquet"),
            None,
            spec,
            workdir=tmp_path / "work",
            cache_dir=tmp_path / "cache",
        )
    assert "dataset_id" in error.value.message and "64" in error.value.message
