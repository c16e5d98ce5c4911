"""Hostile tokenizer.json files, validated as the worker validates a teacher's upload: in
the sandbox, under the validation memory cap. Each is refused with its own code; none
crashes the sandbox child (let alone the worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.contracts import InspectTeacherRequest, TeacherInfo
from core.settings import get_settings
from tests.engine.text_helpers import VOCAB, export_onnx, tokenizer_json, train_teacher
from worker.sandbox import SandboxError, run_once


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(train_teacher(), tmp_path_factory.mktemp("t") / "t.onnx")


def _validate(teacher: Path, tokenizer: Path) -> object:
    request = InspectTeacherRequest(path=str(teacher), format="onnx", tokenizer_path=str(tokenizer))
    return run_once(
        request,
        memory_bytes=get_settings().validation_memory_bytes,
        cpu_seconds=300,
        timeout_s=300,
    )


def _word_level(vocab: dict[str, int]) -> str:
    base = json.loads(tokenizer_json())
    base["model"]["vocab"] = vocab
    return json.dumps(base)


def _bpe(tokens: int, merges: list[str]) -> str:
    vocab = {chr(0x4E00 + i): i for i in range(tokens)}
    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": None,
            "post_processor": None,
            "decoder": None,
            "model": {"type": "BPE", "vocab": vocab, "merges": merges, "unk_token": None},
        }
    )


def _refused(teacher: Path, tmp_path: Path, content: str) -> SandboxError:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    assert len(content.encode()) <= get_settings().max_form_tokenizer_bytes  # an upload's size
    with pytest.raises(SandboxError) as error:
        _validate(teacher, path)
    return error.value


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_vocabulary_of_millions_is_refused_within_the_cap(teacher: Path, tmp_path: Path) -> None:
    vocab = {f"t{i}": i for i in range(1_500_000)}
    error = _refused(teacher, tmp_path, _word_level(vocab))
    assert error.code == "tokenizer_mismatch", error.message
    assert "1500000 tokens" in error.message


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deep_nesting_is_refused(teacher: Path, tmp_path: Path) -> None:
    deep = '{"model": ' * 200_000 + "{}" + "}" * 200_000
    error = _refused(teacher, tmp_path, deep)
    assert error.code == "bad_tokenizer", error.message


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_huge_merges_list_is_refused(teacher: Path, tmp_path: Path) -> None:
    # 1.2 million merges of tokens the vocabulary lacks: 24 MB of JSON, under the upload
    # cap (a larger one, the 1 GB of the audit, is a 413 before anything reads it).
    merges = [f"x{i} y{i}" for i in range(1_200_000)]
    error = _refused(teacher, tmp_path, _bpe(VOCAB, merges))
    assert error.code == "bad_tokenizer", error.message


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_test_tokenizer_itself_passes(teacher: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json())
    info = _validate(teacher, path)
    assert isinstance(info, TeacherInfo)
    assert info.model_dump()["tokenizer"]["vocab_size"] == VOCAB
