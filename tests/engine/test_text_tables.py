"""Text as CSV and Parquet tables, token ids as Parquet: read in batches, tokenized like
JSON Lines, refused with the row and column named when they are not what they say."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.errors import ErrorCode
from core.formats import sniff_dataset
from engine.data import inspect_dataset, open_dataset
from engine.errors import UserError
from engine.text_data import cache_name, text_rows
from tests.engine.text_helpers import jsonl_text, token_set, tokenizer_json

NAMES = ["input_ids", "attention_mask"]


def _texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    data = token_set(n, seed)
    texts = [
        " ".join(f"w{i}" for i, m in zip(ids, mask, strict=True) if m)
        for ids, mask in zip(data["input_ids"], data["attention_mask"], strict=True)
    ]
    return texts, [int(y) for y in data["label"]]


def _tokenizer(tmp_path: Path) -> Path:
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json())
    return path


def _rows(path: Path, fmt: str, tmp_path: Path, names: list[str] = NAMES) -> np.ndarray:
    folder = tmp_path / f"tokens-{fmt}-{path.name}"
    rows = text_rows(path, _tokenizer(tmp_path), names=names, max_length=12, folder=folder, fmt=fmt)
    everything = np.arange(rows.num_samples)
    labels = rows.labels(everything)
    return np.concatenate(
        [rows.read(everything).numpy().reshape(rows.num_samples, -1), labels.numpy()[:, None]], 1
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_text_table_is_tokenized_exactly_like_json_lines(tmp_path: Path, fmt: str) -> None:
    data = token_set(300, 1)
    jsonl = jsonl_text(data, tmp_path / "t.jsonl")
    texts, labels = _texts(300, 1)
    # Other columns ride along unread; CSV cells with quotes, commas and newlines survive.
    table = pa.table({"id": list(range(300)), "text": texts, "label": labels})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=64)  # several row groups, several batches
    assert sniff_dataset(path) == fmt
    described = inspect_dataset(path, fmt)
    assert described["kind"] == "text" and described["num_samples"] == 300
    assert described["has_labels"] and described["num_classes"] == 3
    np.testing.assert_array_equal(_rows(path, fmt, tmp_path), _rows(jsonl, "jsonl", tmp_path))


def test_a_csv_of_one_text_column_with_pairs_quotes_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('text\n"w2 w3, w4"\n"w5\nw6"\n"w7 ""w8"""\n')
    assert sniff_dataset(path) == "csv"
    described = inspect_dataset(path, "csv")
    assert described["num_samples"] == 3 and not described["has_labels"]
    ids = _rows_without_labels(path, "csv", tmp_path)
    # The comma is a token of its own, unknown to the word-level vocabulary: [UNK] is 1.
    assert ids[0][:4].tolist() == [2, 3, 1, 4] and ids[1][:3].tolist() == [5, 6, 0]
    assert ids[2][:4].tolist() == [7, 1, 8, 1]


def _rows_without_labels(path: Path, fmt: str, tmp_path: Path) -> np.ndarray:
    folder = tmp_path / f"plain-{fmt}"
    rows = text_rows(path, _tokenizer(tmp_path), names=NAMES, max_length=12, folder=folder, fmt=fmt)
    assert not rows.has_labels
    return rows.read(np.arange(rows.num_samples)).numpy()[:, 0].astype(np.int64)


def test_text_pairs_from_parquet_are_tokenized_as_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"text": ["w2 w3", "w4"], "text_pair": ["w5", None]}), path)
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps({"text": "w2 w3", "text_pair": "w5"}) + "\n")
    single.write_text(single.read_text() + json.dumps({"text": "w4"}) + "\n")
    np.testing.assert_array_equal(
        _rows_without_labels(path, "parquet", tmp_path),
        _rows_without_labels(single, "jsonl", tmp_path),
    )


def _parquet(tmp_path: Path, columns: dict[str, object], name: str = "bad.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    ("columns", "code", "words"),
    [
        ({"text": [1, 2]}, ErrorCode.BAD_TEXT, "not strings"),
        ({"text": ["w2", None]}, ErrorCode.BAD_TEXT, "row 2"),
        ({"text": ["w2", "w3"], "label": [0, None]}, ErrorCode.BAD_LABELS, "row 2"),
        ({"text": ["w2", "w3"], "label": [0, -1]}, ErrorCode.BAD_LABELS, "row 2"),
        ({"text": ["w2", "w3"], "label": ["a", "b"]}, ErrorCode.BAD_LABELS, "integers"),
        ({"text": ["w2", "x" * ((1 << 20) + 1)]}, ErrorCode.BAD_TEXT, "longer than 1 MiB"),
        ({"sentence": ["w2", "w3"]}, ErrorCode.NON_NUMERIC, "'text'"),
    ],
)
def test_bad_text_tables_are_refused_naming_the_row(
    tmp_path: Path, columns: dict[str, object], code: ErrorCode, words: str
) -> None:
    path = _parquet(tmp_path, columns)
    with pytest.raises(UserError) as error:
        inspect_dataset(path, "parquet")
    assert error.value.code == code and words in error.value.message


def test_a_ragged_csv_row_is_a_bad_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\nw2,0\nw3,1,7\n")
    with pytest.raises(UserError) as error:
        inspect_dataset(path, "csv")
    assert error.value.code == ErrorCode.BAD_CSV


def test_numeric_tables_are_still_tables(tmp_path: Path) -> None:
    path = _parquet(tmp_path, {"a": [0.5, 1.5], "b": [1, 2], "label": [0, 1]}, "num.parquet")
    described = inspect_dataset(path, "parquet")
    assert described.get("kind", "tensor") == "tensor" and described["sample_shape"] == [2]


def test_a_token_parquet_is_padded_like_an_npz(tmp_path: Path) -> None:
    data = token_set(200, 3)
    lengths = data["attention_mask"].sum(1)
    ids = [row[:n].tolist() for row, n in zip(data["input_ids"], lengths, strict=True)]
    path = _parquet(tmp_path, {"input_ids": ids, "label": data["label"].tolist()}, "tokens.parquet")
    described = inspect_dataset(path, "parquet")
    assert described["kind"] == "tokens" and described["inputs"] == ["input_ids"]
    longest = int(lengths.max())
    assert described["sample_shape"] == [longest] and described["num_classes"] == 3
    rows = open_dataset(path, "parquet", scratch=tmp_path / "s", token_inputs=NAMES)
    everything = np.arange(200)
    x = rows.read(everything).numpy().astype(np.int64)
    np.testing.assert_array_equal(x[:, 0], data["input_ids"][:, :longest])
    np.testing.assert_array_equal(x[:, 1], data["attention_mask"][:, :longest])
    np.testing.assert_array_equal(rows.labels(everything).numpy(), data["label"])


def test_a_ragged_token_parquet_masks_by_each_rows_length_not_by_id_0(tmp_path: Path) -> None:
    """In vocabularies such as GPT-2's, id 0 is a real token: a row's own length says where it
    ends, so an id 0 inside a row is taught and seen by the teacher, and padding is not."""
    ids = [[5, 0, 7], [0], [3, 4, 0, 0, 9]]
    path = _parquet(tmp_path, {"input_ids": ids}, "tokens.parquet")
    rows = open_dataset(path, "parquet", scratch=tmp_path / "s", token_inputs=NAMES)
    x = rows.read(np.arange(3)).numpy().astype(np.int64)
    np.testing.assert_array_equal(x[:, 0], [[5, 0, 7, 0, 0], [0, 0, 0, 0, 0], [3, 4, 0, 0, 9]])
    np.testing.assert_array_equal(x[:, 1], [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    # A mask the file gives is the teacher's, as it is.
    given = {"input_ids": ids, "attention_mask": [[1, 1, 0], [1], [1, 1, 1, 1, 0]]}
    path = _parquet(tmp_path, given, "masked.parquet")
    rows = open_dataset(path, "parquet", scratch=tmp_path / "m", token_inputs=NAMES)
    x = rows.read(np.arange(3)).numpy().astype(np.int64)
    np.testing.assert_array_equal(x[:, 1], [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ({"input_ids": [[2, 3], [4]], "attention_mask": [[1, 1], [1, 1]]}, "ragged"),
        ({"input_ids": [[2] * 9000]}, "at most"),
        ({"input_ids": [[2, -3]]}, "outside"),
        ({"input_ids": [[2, 3]], "extra": [1.5]}, "list of integers"),
    ],
)
def test_bad_token_parquet_files_are_refused(
    tmp_path: Path, columns: dict[str, object], words: str
) -> None:
    with pytest.raises(UserError) as error:
        inspect_dataset(_parquet(tmp_path, columns), "parquet")
    assert error.value.code == ErrorCode.BAD_SHAPE and words in error.value.message


def test_a_parquet_without_ids_for_a_token_teacher_names_input_ids(tmp_path: Path) -> None:
    path = _parquet(tmp_path, {"a": [0.5]}, "num.parquet")
    with pytest.raises(UserError) as error:
        open_dataset(path, "parquet", scratch=tmp_path / "s", token_inputs=NAMES)
    assert error.value.code == ErrorCode.MISSING_INPUT and "input_ids" in error.value.message


def test_cache_names_differ_by_dataset_tokenizer_and_length() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    names = {cache_name(a, b, n) for a in (sha, "0" * 64) for b in (sha, "1" * 64) for n in (8, 9)}
    assert len(names) == 8


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_tables_stream_in_bounded_batches_and_count_rows_across_them(
    tmp_path: Path, fmt: str
) -> None:
    from engine import text_data

    n = 3 * text_data.TOKENIZE_BATCH + 17
    texts = [f"w{2 + i % 50}" for i in range(n)]
    texts[n - 5] = ""  # fine: an empty text is text
    table = pa.table({"text": texts, "label": [i % 3 for i in range(n)]})
    path = tmp_path / f"big.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=1000)
    sizes = [len(batch.texts) for batch in text_data.text_batches(path, fmt)]
    assert sum(sizes) == n and max(sizes) <= text_data.TOKENIZE_BATCH and len(sizes) >= 4
    bad = pa.table({"text": texts, "label": [*([0] * (n - 2)), None, 1]})
    if fmt == "csv":
        pacsv.write_csv(bad, path)
    else:
        pq.write_table(bad, path, row_group_size=1000)
    with pytest.raises(UserError) as error:
        inspect_dataset(path, fmt)
    assert error.value.code == ErrorCode.BAD_LABELS and f"row {n - 1}" in error.value.message
