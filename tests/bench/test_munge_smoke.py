"""bench/munge.py runs in `make test` with --quick (one small set, one tree teacher, one
seed, a few epochs) through the engine, so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_munge_quick_prints_both_twins_side_by_side() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.munge", "--quick", "--sets", "iris", "--teachers", "forest"]
        + ["--seeds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    header = "| set | transfer rows | teacher | teacher acc. % | default epochs | 20 epochs |"
    assert header + " scheduled, no MUNGE | default spec |" in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| iris")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "forest" and int(cells[1]) == 90
    assert int(cells[4]) == 600  # 90 rows: one step an epoch, the schedule's cap
    for cell in cells[5:8]:
        assert 0.0 <= float(cell.split(" ± ")[0]) <= 100.0, cells
