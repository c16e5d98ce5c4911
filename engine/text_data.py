"""Text datasets: JSON Lines of ``{"text", "text_pair"?, "label"?}``, or CSV / Parquet with a
string column ``text`` (optional ``text_pair``, integer ``label``), tokenized in the sandbox
with the teacher's tokenizer into token arrays (``token_data.py``), once per
(dataset, tokenizer, max length): the arrays are written to a folder named by those three
and mapped; a resumed job, another pass or a later job on the same cache finds them there.

Streamed: JSON Lines a line at a time, Parquet by record batch (``iter_batches``), CSV
through pyarrow's streaming reader, and tokenized ``TOKENIZE_BATCH`` texts at a time: memory
is O(batch) whatever the file's size. Texts are capped (``MAX_LINE_BYTES``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ErrorCode
from engine.errors import UserError
from engine.token_data import TokenRows
from engine.tokenizer import load_tokenizer

MAX_LINE_BYTES = 1 << 20
TOKENIZE_BATCH = 1024
DEFAULT_MAX_LENGTH = 128  # a tokenizer without truncation and a teacher of any length
TEXT_COLUMN, PAIR_COLUMN, LABEL_COLUMN = "text", "text_pair", "label"
TEXT_FORMATS = ("jsonl", "csv", "parquet")
TABLE_BLOCK_ROWS = 4096  # Parquet rows a batch
CSV_BLOCK_BYTES = 4 * MAX_LINE_BYTES  # a pyarrow CSV block holds whole rows: room for the cap
DONE = "done.json"


@dataclass(frozen=True)
class TextScan:
    num_rows: int
    has_labels: bool
    label_max: int | None
    has_pairs: bool


@dataclass
class TextBatch:
    """Up to ``TOKENIZE_BATCH`` rows: texts, their pairs (None where a row has none) and
    labels (None: the file has no labels). ``first`` is the first row's number (from 1)."""

    first: int
    texts: list[str]
    pairs: list[str | None] | None
    labels: list[int | None] | None


# --- JSON Lines -----------------------------------------------------------------------------


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


def _jsonl_batches(path: Path) -> Iterator[TextBatch]:
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in _records(path):
        batch.append(item)
        if len(batch) == TOKENIZE_BATCH:
            yield _jsonl_batch(batch)
            batch = []
    if batch:
        yield _jsonl_batch(batch)


def _jsonl_batch(batch: list[tuple[int, dict[str, Any]]]) -> TextBatch:
    pairs: list[str | None] = []
    labels: list[int | None] = []
    for number, record in batch:
        pair = record.get(PAIR_COLUMN)
        if pair is not None and not isinstance(pair, str):
            raise UserError(ErrorCode.BAD_TEXT, f'line {number}: "text_pair" must be a string')
        label = record.get(LABEL_COLUMN)
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise UserError(ErrorCode.BAD_LABELS, f'line {number}: "label" must be an integer >= 0')
        if label is not None and label < 0:
            raise UserError(ErrorCode.BAD_LABELS, f'line {number}: "label" must be an integer >= 0')
        pairs.append(pair)
        labels.append(label)
    return TextBatch(batch[0][0], [r["text"] for _, r in batch], pairs, labels)


# --- CSV and Parquet ------------------------------------------------------------------------


def table_columns(path: str | Path, fmt: str) -> list[str]:
    """The column names of a CSV (its header line) or Parquet file (its schema): what tells a
    text or token table from a numeric one, read without the rows."""
    path = Path(path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(path) as table:
                return list(table.schema_arrow.names)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(
                ErrorCode.BAD_PARQUET, f"The parquet file cannot be parsed: {exc}"[:300]
            ) from exc
    delimiter, names = _csv_header(path)
    return names


def is_text_table(path: str | Path, fmt: str) -> bool:
    return fmt in ("csv", "parquet") and TEXT_COLUMN in table_columns(path, fmt)


def is_text(path: str | Path, fmt: str) -> bool:
    """A text dataset: JSON Lines, or a CSV / Parquet table with a ``text`` column."""
    return fmt == "jsonl" or is_text_table(path, fmt)


def _csv_header(path: Path) -> tuple[str, list[str]]:
    import csv
    import io

    with open(path, "rb") as file:
        first = file.readline(64 * 1024).decode("utf-8", errors="replace")
    delimiter = max(",;\t", key=first.count)
    row = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
    return delimiter, [cell.strip() for cell in row]


def _table_batches(path: Path, fmt: str) -> Iterator[Any]:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as table:
            yield from table.iter_batches(batch_size=TABLE_BLOCK_ROWS)
        return
    from pyarrow import csv

    delimiter, names = _csv_header(path)
    strings = {name: pa.string() for name in (TEXT_COLUMN, PAIR_COLUMN) if name in names}
    with csv.open_csv(
        path,
        read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        parse_options=csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=csv.ConvertOptions(column_types=strings),
    ) as reader:
        yield from reader


def _table_text_batches(path: Path, fmt: str) -> Iterator[TextBatch]:
    import pyarrow as pa

    code = ErrorCode.BAD_CSV if fmt == "csv" else ErrorCode.BAD_PARQUET
    first = 1
    try:
        for block in _table_batches(path, fmt):
            for start in range(0, block.num_rows, TOKENIZE_BATCH):
                part = block.slice(start, TOKENIZE_BATCH)
                yield _table_batch(part, first, fmt)
                first += part.num_rows
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise UserError(code, f"The {fmt} file cannot be parsed: {exc}"[:300]) from exc


def _string_column(batch: Any, name: str, first: int, fmt: str) -> list[str | None]:
    import pyarrow as pa

    column = batch.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(
            ErrorCode.BAD_TEXT,
            f"Column {name!r} of the {fmt} file is {column.type}, not strings.",
        )
    values: list[str | None] = column.to_pylist()
    for offset, value in enumerate(values):
        if value is not None and len(value) > MAX_LINE_BYTES:  # characters: at least as many bytes
            raise UserError(
                ErrorCode.BAD_TEXT, f"row {first + offset}: {name!r} is longer than 1 MiB"
            )
    return values


def _table_batch(batch: Any, first: int, fmt: str) -> TextBatch:
    import pyarrow as pa

    names = list(batch.schema.names)
    if TEXT_COLUMN not in names:
        raise UserError(ErrorCode.BAD_TEXT, f"The {fmt} file has no column 'text'.")
    texts = _string_column(batch, TEXT_COLUMN, first, fmt)
    if None in texts:
        row = first + texts.index(None)
        raise UserError(ErrorCode.BAD_TEXT, f"row {row}: the 'text' cell is empty (null)")
    pairs = _string_column(batch, PAIR_COLUMN, first, fmt) if PAIR_COLUMN in names else None
    labels: list[int | None] | None = None
    if LABEL_COLUMN in names:
        column = batch.column(LABEL_COLUMN)
        if not pa.types.is_integer(column.type):
            raise UserError(
                ErrorCode.BAD_LABELS,
                f"Column 'label' is {column.type}; labels must be integers >= 0.",
            )
        labels = column.to_pylist()
        assert labels is not None
        for offset, label in enumerate(labels):
            if label is None or label < 0:
                raise UserError(
                    ErrorCode.BAD_LABELS,
                    f"row {first + offset}: 'label' must be an integer >= 0 on every row",
                )
    return TextBatch(first, texts, pairs, labels)  # type: ignore[arg-type]


# --- every format ---------------------------------------------------------------------------


def text_batches(path: str | Path, fmt: str) -> Iterator[TextBatch]:
    path = Path(path)
    if fmt == "jsonl":
        return _jsonl_batches(path)
    if fmt in ("csv", "parquet"):
        return _table_text_batches(path, fmt)
    raise UserError(ErrorCode.UNSUPPORTED_FORMAT, f"Text datasets are one of {TEXT_FORMATS}.")


def scan_text(path: str | Path, fmt: str = "jsonl") -> TextScan:
    """One pass: every row a string ``text``; labels on every row or on none."""
    rows, labelled, top, pairs = 0, 0, -1, False
    unit = "lines" if fmt == "jsonl" else "rows"
    for batch in text_batches(path, fmt):
        rows += len(batch.texts)
        pairs = pairs or (batch.pairs is not None and any(p is not None for p in batch.pairs))
        present = [label for label in batch.labels or [] if label is not None]
        labelled += len(present)
        top = max([top, *present])
    if rows == 0:
        raise UserError(ErrorCode.BAD_TEXT, "the file holds no text")
    if labelled not in (0, rows):
        raise UserError(ErrorCode.BAD_LABELS, f"{labelled} of {rows} {unit} have a label")
    return TextScan(rows, labelled > 0, top if labelled else None, pairs)


def scan_jsonl(path: str | Path) -> TextScan:
    return scan_text(path, "jsonl")


def describe_text(path: str | Path, fmt: str = "jsonl") -> dict[str, Any]:
    scan = scan_text(path, fmt)
    return {
        "num_samples": scan.num_rows,
        "sample_shape": [],
        "dtype": "text",
        "has_labels": scan.has_labels,
        "num_classes": None if scan.label_max is None else scan.label_max + 1,
        "kind": "text",
    }


def describe_jsonl(path: str | Path) -> dict[str, Any]:
    return describe_text(path, "jsonl")


def cache_name(dataset_sha: str, tokenizer_sha: str, max_length: int) -> str:
    key = f"{dataset_sha}:{tokenizer_sha}:{max_length}".encode()
    return "tokens-" + hashlib.sha256(key).hexdigest()[:32]


def max_length_for(
    tokenizer_path: str | Path, teacher_length: int | None, limit: int | None = None
) -> int:
    """The teacher's fixed length, else the tokenizer's truncation length, else 128; never
    more than ``limit`` (a model's position embeddings)."""
    if teacher_length is not None:
        return teacher_length
    truncation = load_tokenizer(tokenizer_path).truncation
    length = int(truncation["max_length"]) if truncation else DEFAULT_MAX_LENGTH
    return length if limit is None else min(length, limit)


def text_rows(
    path: str | Path,
    tokenizer_path: str | Path,
    *,
    names: Sequence[str],
    max_length: int,
    folder: Path,
    fmt: str = "jsonl",
) -> TokenRows:
    """The texts as token rows ``[K, L]`` in the teacher's input order, tokenized once into
    ``folder`` (named by ``cache_name``) and mapped: a folder with ``done.json`` is reused."""
    done = folder / DONE
    if not done.exists():
        # Written under a private name and renamed whole: a job that maps the folder never
        # sees another one's half-written arrays (with no sandbox, jobs share the folder).
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _tokenize(Path(path), fmt, Path(tokenizer_path), max_length, tmp)
        (tmp / DONE).write_text(json.dumps({"max_length": max_length}))
        shutil.rmtree(folder, ignore_errors=True)  # unfinished: no done.json
        try:
            os.rename(tmp, folder)
        except OSError:  # another job finished it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    arrays = {
        p.stem: np.load(p, mmap_mode="r", allow_pickle=False)  # our own arrays, just written
        for p in folder.glob("*.npy")
    }
    return TokenRows.build(arrays, names)


class _NpyWriter:
    """An int64 ``.npy`` of a known shape written front to back, a batch at a time: plain
    writes, so memory holds one batch (a writable map would keep its dirty pages)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, rows: Any) -> None:
        self.file.write(np.ascontiguousarray(rows, dtype=np.int64).tobytes())

    def close(self) -> None:
        self.file.close()


def _tokenize(path: Path, fmt: str, tokenizer_path: Path, max_length: int, folder: Path) -> None:
    scan = scan_text(path, fmt)
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (scan.num_rows, max_length)
    out = {
        name: _NpyWriter(folder / f"{name}.npy", shape)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    labels = _NpyWriter(folder / "label.npy", (scan.num_rows,)) if scan.has_labels else None
    try:
        for batch in text_batches(path, fmt):
            pairs = batch.pairs or [None] * len(batch.texts)
            texts = [t if p is None else (t, p) for t, p in zip(batch.texts, pairs, strict=True)]
            encoded = tokenizer.encode_batch(texts)
            out["input_ids"].write([e.ids for e in encoded])
            out["attention_mask"].write([e.attention_mask for e in encoded])
            out["token_type_ids"].write([e.type_ids for e in encoded])
            if labels is not None:
                labels.write(batch.labels)
    finally:
        for writer in (*out.values(), *([] if labels is None else [labels])):
            writer.close()
