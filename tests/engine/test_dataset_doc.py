"""docs/datasets.md says what the loaders accept: its example writes one file of each layout,
and each is recognised and read with the samples and labels the page promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.formats import sniff_dataset
from engine.data import inspect_dataset, load_dataset
from tests.conftest import ROOT

DOC = ROOT / "docs" / "datasets.md"
EXPECTED = {  # file -> (format, sample_shape, has_labels)
    "transfer.npy": ("npy", [64], False),
    "labelled.npz": ("npz", [64], True),
    "labelled.csv": ("csv", [64], True),
    "labelled.parquet": ("parquet", [64], True),
    "images.zip": ("image_zip", [1, 8, 8], True),
}


def test_the_dataset_page_names_every_format_and_the_label_rules() -> None:
    text = DOC.read_text()
    for needle in ("`.npy`", "`.npz`", "member `x`", "member `y`", "`label`", "Parquet"):
        assert needle in text, needle
    assert "one folder per class" in text


def test_the_dataset_page_example_writes_files_the_loaders_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})  # noqa: S102 - the page's own example
    for name, (fmt, shape, labelled) in EXPECTED.items():
        path = tmp_path / name
        assert sniff_dataset(path) == fmt, name
        info = inspect_dataset(path, fmt)
        assert (info["num_samples"], info["sample_shape"], info["has_labels"]) == (
            100,
            shape,
            labelled,
        ), (name, info)
        data = load_dataset(path, fmt, sample_shape=[1, 8, 8])
        assert tuple(data.x.shape) == (100, 1, 8, 8), name
        assert (data.y is not None) == labelled, name
