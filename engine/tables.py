"""CSV and Parquet datasets, read in blocks: never the whole table in memory.

Parquet goes through its row groups (``ParquetFile.iter_batches``), CSV through pyarrow's
streaming reader. Each block is checked (numeric columns, no empty cells, labels) and, when
the engine asks for it, appended to raw float32 / int64 files that are then memory-mapped:
one pass over the table, and the rest of the engine reads rows from the map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.errors import ErrorCode, is_disk_full
from engine.errors import UserError

LABEL_COLUMN = "label"
BLOCK_ROWS = 16_384  # rows per Parquet batch; CSV blocks are pyarrow's (1 MiB of text)
DONE = "table.json"


@dataclass
class TableScan:
    num_rows: int
    features: int
    has_labels: bool
    label_max: int | None


def scan_table(path: Path, fmt: str, out: Path | None = None) -> TableScan:
    """Check every block of the table; with ``out``, also write it there as raw arrays."""
    import pyarrow as pa

    scan = TableScan(0, 0, False, None)
    sink = None if out is None else _Sink(out)
    try:
        for batch in _batches(path, fmt):
            x, y = _block_arrays(batch, fmt)
            _add_block(scan, x, y)
            if sink is not None:
                sink.write(x, y)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        if is_disk_full(exc):  # writing the sink, not reading the user's file: storage_full
            raise
        code = ErrorCode.BAD_CSV if fmt == "csv" else ErrorCode.BAD_PARQUET
        raise UserError(code, f"The {fmt} file cannot be parsed: {exc}"[:300]) from exc
    finally:
        if sink is not None:
            sink.close()
    if scan.num_rows < 1:
        raise UserError(ErrorCode.BAD_SHAPE, f"The {fmt} file has no rows.")
    if out is not None:
        (out / DONE).write_text(json.dumps(scan.__dict__))
    return scan


class _Sink:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.x: IO[bytes] = open(out / "x.f32", "wb")  # noqa: SIM115 - closed by close()
        self.y: IO[bytes] = open(out / "y.i64", "wb")  # noqa: SIM115

    def write(self, x: np.ndarray, y: np.ndarray | None) -> None:
        self.x.write(x.tobytes())
        if y is not None:
            self.y.write(y.tobytes())

    def close(self) -> None:
        self.x.close()
        self.y.close()


def map_table(out: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The arrays ``scan_table`` wrote into ``out``, mapped; None when it never finished."""
    if not (out / DONE).exists():
        return None
    scan = TableScan(**json.loads((out / DONE).read_text()))
    x = np.memmap(out / "x.f32", dtype=np.float32, mode="r", shape=(scan.num_rows, scan.features))
    y = None
    if scan.has_labels:
        y = np.memmap(out / "y.i64", dtype=np.int64, mode="r", shape=(scan.num_rows,))
    return x, y


def _batches(path: Path, fmt: str) -> Iterator[Any]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as table:
            yield from table.iter_batches(batch_size=BLOCK_ROWS)
        return
    from pyarrow import csv

    with open(path, "rb") as file:
        first_line = file.readline(64 * 1024).decode("utf-8")
    delimiter = max(",;\t", key=first_line.count)
    names = [cell.strip() for cell in first_line.split(delimiter)]
    # A first row of numbers is data, not a header.
    has_header = not all(_is_number(name) for name in names)
    with csv.open_csv(
        path,
        read_options=csv.ReadOptions(autogenerate_column_names=not has_header),
        parse_options=csv.ParseOptions(delimiter=delimiter),
    ) as reader:
        yield from reader


def _block_arrays(batch: Any, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    import pyarrow as pa

    names = list(batch.schema.names)
    features = [name for name in names if name != LABEL_COLUMN]
    if not features:
        raise UserError(ErrorCode.BAD_SHAPE, f"The {fmt} file has no feature columns.")
    for name in names:
        column = batch.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise UserError(
                ErrorCode.NON_NUMERIC,
                f"Column {name[:60]!r} is {column.type}, not numbers; features must be numeric "
                "(a text dataset names its column 'text').",
            )
        if column.null_count:
            raise UserError(ErrorCode.MISSING_VALUES, f"Column {name[:60]!r} has empty cells.")
    # One cast per column: no per-sample Python.
    x = np.stack(
        [batch.column(name).to_numpy(zero_copy_only=False).astype(np.float32) for name in features],
        axis=1,
    )
    y = None
    if LABEL_COLUMN in names:
        y = batch.column(LABEL_COLUMN).to_numpy(zero_copy_only=False)
        check_labels(y, len(x))
        y = y.astype(np.int64)
    return x, y


def _add_block(scan: TableScan, x: np.ndarray, y: np.ndarray | None) -> None:
    if scan.num_rows and (x.shape[1] != scan.features or (y is not None) != scan.has_labels):
        raise UserError(ErrorCode.BAD_SHAPE, "The table's columns change between blocks.")
    scan.num_rows += len(x)
    scan.features, scan.has_labels = int(x.shape[1]), y is not None
    if y is not None and len(y):
        scan.label_max = max(int(y.max()), -1 if scan.label_max is None else scan.label_max)


def check_labels(y: np.ndarray, num_samples: int) -> None:
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise UserError(ErrorCode.BAD_LABELS, "Labels must be a 1-D array of integers.")
    if y.shape[0] != num_samples:
        raise UserError(ErrorCode.BAD_LABELS, f"{y.shape[0]} labels for {num_samples} samples.")
    if y.size and y.min() < 0:
        raise UserError(ErrorCode.BAD_LABELS, "Labels must be non-negative class indices.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
