"""bench/speed.py and bench/api_load.py run in `make test` at smoke size, so they cannot rot.

Not timed tests: each benchmark runs end to end and prints its ratios, and every ratio is a
finite positive number (a smoke run on a busy machine proves nothing about the goals).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_PG_URL, REDIS_URL, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


def _number(pattern: str, out: str) -> float:
    found = re.search(pattern, out)
    assert found, f"{pattern!r} not in the output:\n{out[-3000:]}"
    value = float(found.group(1))
    assert math.isfinite(value) and value > 0, f"{pattern!r}: {value}"
    return value


def _run(module: str, out: Path, *extra: str) -> str:
    # The benchmarks start their own services: none of the test session's settings leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    admin_url = BASE_PG_URL.rsplit("/", 1)[0] + "/postgres"
    env.update(STILLHOUSE_BENCH_DATABASE_URL=admin_url, STILLHOUSE_BENCH_REDIS_URL=REDIS_URL)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_speed_benchmark_prints_its_ratios(tmp_path: Path) -> None:
    out = _run("bench.speed", tmp_path, "--s3")
    assert "| (b) floor: teacher pass + bare loop" in out
    assert "| (a) service, SQLite + filesystem broker" in out
    assert "| (c) naive: teacher on every batch" in out
    assert "| (a) service, SQLite + filesystem broker, S3 storage (moto)" in out
    for ratio in ("a/b", "s3/a", "c/a"):
        _number(rf"{ratio} = ([0-9.]+) wall", out)
        _number(rf"{ratio} = [0-9.]+ wall, ([0-9.]+) CPU", out)


def test_api_load_benchmark_prints_its_tables(tmp_path: Path) -> None:
    out = _run("bench.api_load", tmp_path)
    assert "| POST /v1/teachers, curl (1)" in out and "| cp + fsync, same disk (1)" in out
    assert "| bare drain, curl (1)" in out
    _number(r"\*\*median upload vs medians of cp, drain\*\*[^\n]*?\*\*([0-9.]+)\*\*", out)
    _number(r"upload: ([0-9]+)% of the bare drain's speed", out)
    _number(r"drain's speed \(goal ≥ 90 %\), ([0-9]+)% of copy speed", out)
    assert re.search(r"RSS growth -?[0-9]+ MB", out), out[-3000:]
    assert "| GET /v1/jobs/{id}" in out and "| bare Starlette, same SELECT" in out
    _number(r"reads: ([0-9]+)% of the bare throughput", out)
    _number(r"p99 ([0-9.]+) ms \(goal", out)
