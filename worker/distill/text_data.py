"""Text datasets: JSON Lines of ``{"text", "text_pair"?, "label"?}``, tokenized in the sandbox
with the teacher's tokenizer into token arrays (``token_data.py``), once per
(dataset, tokenizer, max length): the arrays are written to a folder named by those three
and mapped; a resumed job or another pass finds them there.

Read a line at a time and tokenized ``TOKENIZE_BATCH`` texts at a time: memory is
O(batch) whatever the file's size. Lines are capped (``MAX_LINE_BYTES``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ErrorCode
from worker.distill.errors import UserError
from worker.distill.token_data import TokenRows
from worker.distill.tokenizer import load_tokenizer

MAX_LINE_BYTES = 1 << 20
TOKENIZE_BATCH = 1024
DEFAULT_MAX_LENGTH = 128  # a tokenizer without truncation and a teacher of any length


@dataclass(frozen=True)
class TextScan:
    num_rows: int
    has_labels: bool
    label_max: int | None
    has_pairs: bool


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as file:
        for number, line in enumerate(iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES:
                raise UserError(ErrorCode.BAD_TEXT, f"line {number} is longer than 1 MiB")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise UserError(ErrorCode.BAD_TEXT, f"line {number} is not JSON") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(
                    ErrorCode.BAD_TEXT, f'line {number} is not an object with a string "text"'
                )
            yield number, record


def scan_jsonl(path: str | Path) -> TextScan:
    """One pass: every line an object with a string ``text``; labels all or none."""
    rows, labelled, top, pairs = 0, 0, -1, False
    for number, record in _records(Path(path)):
        rows += 1
        pair = record.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise UserError(ErrorCode.BAD_TEXT, f'line {number}: "text_pair" must be a string')
        pairs = pairs or pair is not None
        label = record.get("label")
        if label is not None:
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise UserError(
                    ErrorCode.BAD_LABELS, f'line {number}: "label" must be an integer >= 0'
                )
            labelled, top = labelled + 1, max(top, label)
    if rows == 0:
        raise UserError(ErrorCode.BAD_TEXT, "the file holds no text")
    if labelled not in (0, rows):
        raise UserError(ErrorCode.BAD_LABELS, f"{labelled} of {rows} lines have a label")
    return TextScan(rows, labelled > 0, top if labelled else None, pairs)


def describe_jsonl(path: str | Path) -> dict[str, Any]:
    scan = scan_jsonl(path)
    return {
        "num_samples": scan.num_rows,
        "sample_shape": [],
        "dtype": "text",
        "has_labels": scan.has_labels,
        "num_classes": None if scan.label_max is None else scan.label_max + 1,
        "kind": "text",
    }


def cache_name(dataset_sha: str, tokenizer_sha: str, max_length: int) -> str:
    key = f"{dataset_sha}:{tokenizer_sha}:{max_length}".encode()
    return "tokens-" + hashlib.sha256(key).hexdigest()[:32]


def max_length_for(tokenizer_path: str | Path, teacher_length: int | None) -> int:
    """The teacher's fixed length, else the tokenizer's truncation length, else 128."""
    if teacher_length is not None:
        return teacher_length
    truncation = load_tokenizer(tokenizer_path).truncation
    return int(truncation["max_length"]) if truncation else DEFAULT_MAX_LENGTH


def text_rows(
    path: str | Path,
    tokenizer_path: str | Path,
    *,
    names: Sequence[str],
    max_length: int,
    folder: Path,
) -> TokenRows:
    """The texts as token rows ``[K, L]`` in the teacher's input order, tokenized once into
    ``folder`` (named by ``cache_name``) and mapped."""
    done = folder / "done.json"
    if not done.exists():
        _tokenize(Path(path), Path(tokenizer_path), max_length, folder)
        done.write_text(json.dumps({"max_length": max_length}))
    arrays = {
        p.stem: np.load(p, mmap_mode="r", allow_pickle=False)  # our own arrays, just written
        for p in folder.glob("*.npy")
    }
    return TokenRows.build(arrays, names)


def _tokenize(path: Path, tokenizer_path: Path, max_length: int, folder: Path) -> None:
    scan = scan_jsonl(path)
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (scan.num_rows, max_length)
    out = {
        name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.int64, shape)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    labels = (
        np.lib.format.open_memmap(folder / "label.npy", "w+", np.int64, (scan.num_rows,))
        if scan.has_labels
        else None
    )
    start = 0
    for batch in _batches(path):
        texts = [
            r["text"] if r.get("text_pair") is None else (r["text"], r["text_pair"]) for r in batch
        ]
        encoded = tokenizer.encode_batch(texts)
        stop = start + len(batch)
        out["input_ids"][start:stop] = [e.ids for e in encoded]
        out["attention_mask"][start:stop] = [e.attention_mask for e in encoded]
        out["token_type_ids"][start:stop] = [e.type_ids for e in encoded]
        if labels is not None:
            labels[start:stop] = [r["label"] for r in batch]
        start = stop
    for array in (*out.values(), *([] if labels is None else [labels])):
        array.flush()


def _batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for _, record in _records(path):
        batch.append(record)
        if len(batch) == TOKENIZE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
