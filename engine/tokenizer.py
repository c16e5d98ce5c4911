"""A teacher's tokenizer: a Hugging Face ``tokenizer.json`` read by the ``tokenizers`` library
(Rust), inside the sandbox like every upload.

The file is capped in size before it gets here (``STILLHOUSE_MAX_FORM_TOKENIZER_BYTES``) and
the sandbox caps the memory its parse may take; ``tokenizers`` refuses JSON nested deeper
than its parser's recursion limit. Nothing in the file runs: a tokenizer.json is data (a
vocabulary, merges, normalisation and pre-tokenisation rules).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from core.errors import ErrorCode
from engine.errors import UserError


def load_tokenizer(path: str | Path) -> Any:
    from tokenizers import Tokenizer

    data = Path(path).read_bytes()
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except (UnicodeDecodeError, Exception) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(
            ErrorCode.BAD_TOKENIZER, f"Not a readable tokenizer.json: {message}"
        ) from exc


def inspect_tokenizer(path: str | Path, teacher_vocab: int | None) -> dict[str, Any]:
    """{vocab_size, max_length, sha256}; a vocabulary larger than the teacher's embedding
    would feed it ids it has no row for, so it is refused."""
    tokenizer = load_tokenizer(path)
    vocab = int(tokenizer.get_vocab_size(with_added_tokens=True))
    if teacher_vocab is not None and vocab > teacher_vocab:
        raise UserError(
            ErrorCode.TOKENIZER_MISMATCH,
            f"The tokenizer has {vocab} tokens but the teacher's embedding only {teacher_vocab} "
            "rows: it is not this teacher's tokenizer.",
        )
    truncation = tokenizer.truncation
    max_length = int(truncation["max_length"]) if truncation else None
    return {
        "vocab_size": vocab,
        "max_length": max_length,
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
    }
