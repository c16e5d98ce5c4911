"""Token-id datasets as Parquet: list<int> columns named like the teacher's inputs
(``input_ids`` required, ``attention_mask``, ``token_type_ids``, ...) and an optional integer
``label`` column.

Rows may differ in length: each is padded with 0 to the longest row of the file (a missing
``attention_mask`` is then 1 within each row's own length, so a vocabulary whose id 0 is a
real token keeps it; ``.npz`` arrays, all of one length, say nothing of where a row ends and
get 1 where the id is not 0), but within a row every input has the length of its
``input_ids``. Read by record batch in two passes (check and
measure, then write padded ``.npy`` arrays into the job's scratch folder once and map them):
memory is O(batch) whatever the file's size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ErrorCode
from engine.errors import UserError
from engine.token_data import LABEL, MAX_TOKEN_MEMBERS, TokenRows

IDS = "input_ids"
MAX_SEQUENCE = 8192  # tokens a row; longer rows are refused
MAX_ID = 1 << 24  # float32 holds every id below it exactly (tokens.py)
BLOCK_ROWS = 4096
# 1 within each row's own length: the mask of a table that gives none (a file name no column
# can take: column files are named after inputs, which are identifiers).
ROW_MASK = "row-mask.npy"
DONE = "tokens.json"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


@dataclass
class TokenTableScan:
    num_rows: int = 0
    length: int = 0
    inputs: list[str] = field(default_factory=list)
    has_labels: bool = False
    label_max: int | None = None


def is_token_table(columns: Sequence[str]) -> bool:
    return IDS in columns


def _batches(path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as table:
            yield from table.iter_batches(batch_size=BLOCK_ROWS)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(
            ErrorCode.BAD_PARQUET, f"The parquet file cannot be parsed: {exc}"[:300]
        ) from exc


def _inputs(schema: Any) -> list[str]:
    import pyarrow as pa

    names = [name for name in schema.names if name != LABEL]
    bad = [name for name in names if not _NAME.fullmatch(name)]
    if bad or len(names) > MAX_TOKEN_MEMBERS:
        raise UserError(
            ErrorCode.BAD_SHAPE,
            f"A token Parquet file holds at most {MAX_TOKEN_MEMBERS} list columns named like "
            "the teacher's inputs (input_ids, attention_mask, ...) and 'label'"
            + (f"; found {sorted(bad)[:5]}." if bad else "."),
        )
    for name in names:
        kind = schema.field(name).type
        listed = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if not (listed or pa.types.is_fixed_size_list(kind)) or not pa.types.is_integer(
            kind.value_type
        ):
            raise UserError(
                ErrorCode.BAD_SHAPE,
                f"Token column {name!r} must be a list of integers (it is {kind}).",
            )
    return names


def _lengths(column: Any, name: str, first: int) -> np.ndarray:
    import pyarrow.compute as pc

    if column.null_count:
        raise UserError(ErrorCode.MISSING_VALUES, f"Token column {name!r} has empty cells.")
    lengths: np.ndarray = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and int(lengths.max()) > MAX_SEQUENCE:
        row = first + int(np.argmax(lengths > MAX_SEQUENCE))
        raise UserError(
            ErrorCode.BAD_SHAPE,
            f"row {row}: {name!r} holds {int(lengths.max())} tokens; at most {MAX_SEQUENCE}.",
        )
    return lengths.astype(np.int64)


def _values(column: Any, name: str) -> np.ndarray:
    values: np.ndarray = column.flatten().to_numpy(zero_copy_only=False)
    if values.size and (int(values.min()) < 0 or int(values.max()) >= MAX_ID):
        raise UserError(
            ErrorCode.BAD_SHAPE,
            f"Token column {name!r} holds ids outside [0, {MAX_ID}): not token ids.",
        )
    return values


def _labels(batch: Any, first: int) -> np.ndarray:
    import pyarrow as pa

    column = batch.column(LABEL)
    if not pa.types.is_integer(column.type) or column.null_count:
        raise UserError(
            ErrorCode.BAD_LABELS, "Column 'label' must hold an integer >= 0 on every row."
        )
    labels: np.ndarray = column.to_numpy(zero_copy_only=False)
    if len(labels) and int(labels.min()) < 0:
        row = first + int(np.argmax(labels < 0))
        raise UserError(ErrorCode.BAD_LABELS, f"row {row}: 'label' must be an integer >= 0.")
    return labels.astype(np.int64)


def _blocks(path: Path) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, Any], Any]]:
    """(first row, lengths per input, the columns, the batch) for every record batch, each
    row checked: every input as long as its ``input_ids``."""
    first = 1
    for batch in _batches(path):
        names = _inputs(batch.schema)
        if IDS not in names:
            raise UserError(ErrorCode.MISSING_INPUT, "A token Parquet file needs 'input_ids'.")
        columns = {name: batch.column(name) for name in names}
        lengths = {name: _lengths(column, name, first) for name, column in columns.items()}
        for name, other in lengths.items():
            if not np.array_equal(other, lengths[IDS]):
                row = first + int(np.argmax(other != lengths[IDS]))
                raise UserError(
                    ErrorCode.BAD_SHAPE,
                    f"row {row}: {name!r} is not as long as its 'input_ids' (ragged row).",
                )
        yield first, lengths, columns, batch
        first += batch.num_rows


def scan_token_table(path: str | Path) -> TokenTableScan:
    scan = TokenTableScan()
    for first, lengths, columns, batch in _blocks(Path(path)):
        for name, column in columns.items():
            _values(column, name)
        if scan.num_rows and (
            sorted(columns) != scan.inputs or (LABEL in batch.schema.names) != scan.has_labels
        ):
            raise UserError(ErrorCode.BAD_SHAPE, "The file's columns change between batches.")
        scan.inputs, scan.has_labels = sorted(columns), LABEL in batch.schema.names
        if batch.num_rows:
            scan.length = max(scan.length, int(lengths[IDS].max()))
        if scan.has_labels and batch.num_rows:
            top = int(_labels(batch, first).max())
            scan.label_max = top if scan.label_max is None else max(scan.label_max, top)
        scan.num_rows += batch.num_rows
    if scan.num_rows < 1 or scan.length < 1:
        raise UserError(ErrorCode.BAD_SHAPE, "The token Parquet file has no tokens.")
    return scan


def describe_token_table(path: str | Path) -> dict[str, Any]:
    scan = scan_token_table(path)
    return {
        "num_samples": scan.num_rows,
        "sample_shape": [scan.length],
        "dtype": "int64",
        "has_labels": scan.has_labels,
        "num_classes": None if scan.label_max is None else scan.label_max + 1,
        "kind": "tokens",
        "inputs": scan.inputs,
    }


def token_table_rows(path: str | Path, names: Sequence[str], scratch: Path) -> TokenRows:
    """The table as rows ``[K, L]`` in the teacher's input order, padded with 0, written
    into ``scratch`` once and mapped."""
    path, done = Path(path), scratch / DONE
    if not done.exists():
        scan = scan_token_table(path)
        _write(path, scan, scratch)
        done.write_text(json.dumps(scan.__dict__))
    scan = TokenTableScan(**json.loads(done.read_text()))
    arrays = {
        name: np.load(scratch / f"{name}.npy", mmap_mode="r", allow_pickle=False)  # ours
        for name in [*scan.inputs, *([LABEL] if scan.has_labels else [])]
    }
    mask_file = scratch / ROW_MASK  # absent in a folder written before it existed
    row_mask = np.load(mask_file, mmap_mode="r", allow_pickle=False) if mask_file.exists() else None
    return TokenRows.build(arrays, names, row_mask)


def _write(path: Path, scan: TokenTableScan, scratch: Path) -> None:
    from engine.text_data import _NpyWriter

    scratch.mkdir(parents=True, exist_ok=True)
    shape = (scan.num_rows, scan.length)
    out = {name: _NpyWriter(scratch / f"{name}.npy", shape) for name in scan.inputs}
    row_mask = _NpyWriter(scratch / ROW_MASK, shape)
    labels = _NpyWriter(scratch / f"{LABEL}.npy", (scan.num_rows,)) if scan.has_labels else None
    try:
        for first, lengths, columns, batch in _blocks(path):
            rows = batch.num_rows
            count = lengths[IDS]
            # Row r's k-th token goes to [r, k]: one scatter per column, no Python loop.
            row_index = np.repeat(np.arange(rows), count)
            offsets = np.repeat(np.cumsum(count) - count, count)
            col_index = np.arange(int(count.sum())) - offsets
            for name, column in columns.items():
                block = np.zeros((rows, scan.length), dtype=np.int64)
                block[row_index, col_index] = _values(column, name)
                out[name].write(block)
            block = np.zeros((rows, scan.length), dtype=np.int64)
            block[row_index, col_index] = 1
            row_mask.write(block)
            if labels is not None:
                labels.write(_labels(batch, first))
    finally:
        for writer in (*out.values(), row_mask, *([] if labels is None else [labels])):
            writer.close()
