"""Validating a dataset never imports torch: about 2 s of a sandbox's start and its memory
(engine/lazy.py). Each format is inspected in a fresh interpreter."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from engine.data import inspect_dataset
info = inspect_dataset(sys.argv[1], sys.argv[2])
print(json.dumps({"info": info, "torch": "torch" in sys.modules}))
"""


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, "PNG")
    return out.getvalue()


def _files(folder: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    x = rng.random((6, 4), dtype=np.float32)
    files: dict[str, tuple[Path, str]] = {}
    np.save(folder / "x.npy", x)
    files["npy"] = (folder / "x.npy", "npy")
    np.savez(folder / "xy.npz", x=x, y=np.arange(6) % 2)
    files["npz"] = (folder / "xy.npz", "npz")
    np.savez(folder / "tok.npz", input_ids=np.ones((6, 5), np.int64), label=np.arange(6) % 2)
    files["npz tokens"] = (folder / "tok.npz", "npz")
    (folder / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(6)))
    files["csv"] = (folder / "t.csv", "csv")
    pq.write_table(pa.table({"a": [1.0, 2.0], "label": [0, 1]}), folder / "t.parquet")
    files["parquet"] = (folder / "t.parquet", "parquet")
    pq.write_table(pa.table({"text": ["a b", "c"], "label": [0, 1]}), folder / "text.parquet")
    files["parquet text"] = (folder / "text.parquet", "parquet")
    rows = [{"text": "a b", "label": 0}, {"text": "c", "label": 1}]
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files["jsonl"] = (folder / "t.jsonl", "jsonl")
    with zipfile.ZipFile(folder / "img.zip", "w") as zf:
        zf.writestr("0/a.png", _png())
        zf.writestr("1/b.png", _png())
    files["image_zip"] = (folder / "img.zip", "image_zip")
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return _files(tmp_path_factory.mktemp("lazy"))


KINDS = ["npy", "npz", "npz tokens", "csv", "parquet", "parquet text", "jsonl", "image_zip"]


@pytest.mark.parametrize("kind", KINDS)
def test_inspecting_a_dataset_imports_no_torch(
    kind: str, files: dict[str, tuple[Path, str]]
) -> None:
    path, fmt = files[kind]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["info"]["num_samples"] > 0, out
    assert out["torch"] is False, f"{kind}: validation imported torch"
