"""Recognise uploaded teachers and datasets by their content, never by their file name.

Standard library only: the API imports this and must not pull in numpy or torch. The answer
is a hint for routing, not a safety check; the worker's guarded loaders verify everything again.
"""

import csv
import io
import json
import os
import zipfile
from pathlib import Path

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CSV_SAMPLE_BYTES = 64 * 1024
_CSV_DELIMITERS = (",", ";", "\t")
_TEXT_COLUMN = "text"  # a CSV of text: tokenized by the worker
# ModelProto field numbers and their protobuf wire types (0 varint, 2 length-delimited).
_ONNX_MODEL_FIELDS = {
    1: 0,  # ir_version
    2: 2,  # producer_name
    3: 2,  # producer_version
    4: 2,  # domain
    5: 0,  # model_version
    6: 2,  # doc_string
    7: 2,  # graph
    8: 2,  # opset_import
    14: 2,  # metadata_props
    20: 2,  # training_info
    25: 2,  # functions
    26: 2,  # configuration
}
_ONNX_MAX_FIELDS = 10_000  # a real model has a handful of top-level fields
_ONNX_MAX_IR_VERSION = 64


def sniff_teacher(path: str | os.PathLike[str]) -> str | None:
    """Return "onnx", "torch_export", "torchscript", "hf" or None for anything else."""
    head = _read_head(path, 8)
    if head.startswith(_ZIP_MAGICS):
        names = _zip_names(path)
        if names is None:
            return None
        if _is_torch_export(names):
            return "torch_export"
        if _is_torchscript(names):
            return "torchscript"
        if _is_hf_folder(names):
            return "hf"
        return None
    return "onnx" if _looks_like_onnx(Path(path)) else None


def sniff_dataset(path: str | os.PathLike[str]) -> str | None:
    """Return "npy", "npz", "csv", "parquet", "image_zip", "jsonl" or None for anything else."""
    head = _read_head(path, 8)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_PARQUET_MAGIC) and _read_tail(path, 4) == _PARQUET_MAGIC:
        return "parquet"
    if head.startswith(_ZIP_MAGICS):
        names = _zip_names(path)
        if not names:
            return None
        files = [name for name in names if not name.endswith("/")]
        if files and all(name.endswith(".npy") for name in files):
            return "npz"
        if files and all(name.lower().endswith(_IMAGE_SUFFIXES) for name in files):
            return "image_zip"
        return None
    if _looks_like_jsonl(Path(path)):
        return "jsonl"
    return "csv" if _looks_like_csv(Path(path)) else None


def _looks_like_jsonl(path: Path) -> bool:
    """JSON Lines of text: the first line is a JSON object with a string "text"."""
    with open(path, "rb") as file:
        first = file.readline(_CSV_SAMPLE_BYTES)
    if not first.lstrip().startswith(b"{"):
        return False
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("text"), str)


def _read_head(path: str | os.PathLike[str], size: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def _read_tail(path: str | os.PathLike[str], size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() < 2 * size:
            return b""
        file.seek(-size, os.SEEK_END)
        return file.read(size)


def _zip_names(path: str | os.PathLike[str]) -> list[str] | None:
    # The central directory is all we read: member contents are never decompressed here.
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def _strip_root(names: list[str]) -> set[str]:
    """Drop the single top-level folder that torch archives put every record under."""
    return {name.split("/", 1)[1] for name in names if "/" in name}


def _is_torch_export(names: list[str]) -> bool:
    records = _strip_root(names)
    return "archive_format" in records and any(
        record.startswith("models/") and record.endswith(".json") for record in records
    )


def _is_hf_folder(names: list[str]) -> bool:
    """A zipped Hugging Face model folder: config.json beside a .safetensors file, at the
    top or in one folder. What else it holds is the worker's to judge (and refuse)."""
    for prefix in {"", *(name.split("/", 1)[0] + "/" for name in names if "/" in name)}:
        inside = [name[len(prefix) :] for name in names if name.startswith(prefix)]
        if "config.json" in inside and any(
            "/" not in name and name.endswith(".safetensors") for name in inside
        ):
            return True
    return False


def _is_torchscript(names: list[str]) -> bool:
    records = _strip_root(names)
    has_code = any(record.startswith("code/") for record in records)
    return has_code and ("data.pkl" in records or "constants.pkl" in records)


def _looks_like_csv(path: Path) -> bool:
    with open(path, "rb") as file:
        sample = file.read(_CSV_SAMPLE_BYTES)
    if not sample or b"\x00" in sample:
        return False
    if len(sample) == _CSV_SAMPLE_BYTES:
        # The sample may end mid-line (or mid-character): judge whole lines only.
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    for delimiter in _CSV_DELIMITERS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        widths = {len(row) for row in rows}
        # A text table may hold its one column, "text", alone.
        least = 1 if _TEXT_COLUMN in (cell.strip() for cell in rows[0]) else 2
        if len(widths) == 1 and widths.pop() >= least:
            return True
    return False


def _looks_like_onnx(path: Path) -> bool:
    """Walk ModelProto's top-level fields: they must be known, well-formed and end at EOF.

    ONNX has no magic number. Length-delimited fields are skipped with a seek, so this reads
    a few bytes per field however large the model is.
    """
    size = path.stat().st_size
    seen: set[int] = set()
    with open(path, "rb") as file:
        for _ in range(_ONNX_MAX_FIELDS):
            if file.tell() == size:
                break
            key = _read_varint(file)
            if key is None:
                return False
            field, wire_type = key >> 3, key & 7
            if _ONNX_MODEL_FIELDS.get(field) != wire_type:
                return False
            value = _read_varint(file)
            if value is None:
                return False
            if field == 1 and not 1 <= value <= _ONNX_MAX_IR_VERSION:
                return False
            if wire_type == 2:
                if file.tell() + value > size:
                    return False
                file.seek(value, os.SEEK_CUR)
            seen.add(field)
        else:
            return False
    return {1, 7} <= seen


def _read_varint(file: io.BufferedReader) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = file.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None
