"""The quality benchmarks run in `make test` with --quick, so they cannot rot.

Each starts the real service (`stillhouse run`) and drives it through the SDK: a few jobs,
each with about 20 s of fixed cost on a 2-core CPU (teacher sandbox, ONNX export, timing).
The full MNIST smoke run needs the IDX files (fetched once from PyPI by bench/data.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Floors for the quick runs: a few hundred samples and seconds of training, so far below the
# real results, but far above chance (10 classes: 90 % errors, 10 % accuracy).
MAX_TEST_ERRORS_OF_1000 = 650
MIN_DIGITS_ACCURACY = 0.60
MIN_MNIST1D_ACCURACY = 0.15


def _rows(out: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows whose first cell starts with ``first_cell``."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def _percent(cell: str) -> float:
    found = re.fullmatch(r"([0-9.]+) %", cell)
    assert found, cell
    return float(found.group(1)) / 100


def _run(module: str, env: dict[str, str], *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--quick", "--threads", "1", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_hinton_mnist_quick_prints_its_table(shared_service: dict[str, str]) -> None:
    out = _run("bench.hinton_mnist", shared_service)
    assert "| model | T | alpha | val errors (200) | test errors | gap recovered |" in out
    rows = _rows(out, "teacher 784-64-64-10") + _rows(out, "student 784-32-32-10")
    assert [r[0].split(", ", 1)[-1] for r in rows[1:]] == [
        "hard labels only",
        "distilled",
        "distilled, transfer set without labels",
    ]
    for row in rows:
        assert int(row[4]) <= MAX_TEST_ERRORS_OF_1000, row
    for row in rows[2:]:
        assert re.fullmatch(r"-?[0-9]+ %|no gap \(twin [-+][0-9]+ vs teacher\)", row[5]), row


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_small_sets_quick_prints_its_table(shared_service: dict[str, str]) -> None:
    # MNIST-1D alone: digits through the service is the variants smoke run's set (the same
    # data, teacher architecture and mlp student), and a distilled job with labels is
    # hinton_mnist's.
    out = _run("bench.small_sets", shared_service, "--sets", "mnist1d")
    assert "| set | student | teacher params | student params | compression |" in out
    assert not _rows(out, "digits")
    (row,) = _rows(out, "MNIST-1D")
    compression = float(row[4].rstrip("×"))
    teacher, student, agreement = (_percent(c) for c in row[5:8])
    assert compression > 5, row
    assert teacher >= MIN_MNIST1D_ACCURACY and student >= MIN_MNIST1D_ACCURACY, row
    assert 0 < agreement <= 1, row


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_variants_quick_measures_every_file_outside_the_service(
    shared_service: dict[str, str],
) -> None:
    out = _run("bench.variants", shared_service)
    assert "| set | student | file | bytes | vs fp32 |" in out
    rows = _rows(out, "digits")
    assert [(r[1], r[2]) for r in rows] == [
        (student, fmt) for student in ("mlp", "cnn") for fmt in ("onnx", "onnx_fp16", "onnx_int8")
    ]
    for row in rows:
        assert row[-1] == "yes", row  # the report's agreement and bytes are the file's
        assert _percent(row[10]) >= MIN_DIGITS_ACCURACY - 0.1, row
        if row[2] != "onnx":
            assert float(row[4].rstrip("x")) < 0.7, row  # smaller than the fp32 file


def test_run_all_finds_the_quality_benchmarks_and_skips_helpers() -> None:
    from bench.run_all import discover

    found = discover()
    assert {"hinton_mnist", "small_sets", "variants"} <= set(found)
    assert not {"data", "service", "run_all"} & set(found)
