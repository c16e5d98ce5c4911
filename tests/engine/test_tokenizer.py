"""A teacher's tokenizer.json, read by the tokenizers library and held against the teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ErrorCode
from engine.errors import UserError
from engine.tokenizer import inspect_tokenizer
from tests.engine.text_helpers import LENGTH, VOCAB, tokenizer_json


def test_a_tokenizer_is_described_by_vocabulary_length_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json())
    info = inspect_tokenizer(path, VOCAB)
    assert info["vocab_size"] == VOCAB and info["max_length"] == LENGTH
    assert len(info["sha256"]) == 64


def test_a_vocabulary_larger_than_the_embedding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json(VOCAB + 40))
    with pytest.raises(UserError) as error:
        inspect_tokenizer(path, VOCAB)
    assert error.value.code == ErrorCode.TOKENIZER_MISMATCH


@pytest.mark.parametrize(
    "content",
    [b"not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b'{"model": {"type": "nope"}}'],
)
def test_hostile_or_broken_tokenizer_files_are_user_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        inspect_tokenizer(path, VOCAB)
    assert error.value.code == ErrorCode.BAD_TOKENIZER
