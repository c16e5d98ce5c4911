"""bench/sweep_cost.py runs in `make test` at smoke size, so that it cannot rot (not a timed
test: a smoke run on a busy machine proves nothing about the goal)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_sweep_cost_prints_its_ratio(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "bench.sweep_cost",
            "--quick",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    found = re.search(r"fastest rounds, wall: .* = ([0-9.]+) \(goal", done.stdout)
    assert found, done.stdout[-2000:]
    assert math.isfinite(float(found.group(1))) and float(found.group(1)) > 0
    assert (tmp_path / "sweep_cost.md").read_text().startswith("# sweep cost")
