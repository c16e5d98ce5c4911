"""bench/speed.py and bench/api_load.py run in `make test` at smoke size, so they cannot rot.

Not timed tests: they check that each benchmark runs end to end and prints its table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import BASE_PG_URL, REDIS_URL, ROOT


def _run(module: str, out: Path) -> str:
    # The benchmarks start their own services: none of the test session's settings leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    admin_url = BASE_PG_URL.rsplit("/", 1)[0] + "/postgres"
    env.update(STILLHOUSE_BENCH_DATABASE_URL=admin_url, STILLHOUSE_BENCH_REDIS_URL=REDIS_URL)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_speed_benchmark_prints_its_ratios(tmp_path: Path) -> None:
    out = _run("bench.speed", tmp_path)
    assert "| (b) floor: teacher pass + bare loop" in out
    assert "| (a) service, SQLite + filesystem broker" in out
    assert "| (c) naive: teacher on every batch" in out
    assert "a/b = " in out and "c/a = " in out


def test_api_load_benchmark_prints_its_tables(tmp_path: Path) -> None:
    out = _run("bench.api_load", tmp_path)
    assert "| POST /v1/teachers, curl (1)" in out and "| cp + fsync, same disk (1)" in out
    assert "median upload / median cp" in out and "of copy speed" in out
    assert "| GET /v1/jobs/{id}" in out and "| bare Starlette, same SELECT" in out
    assert "of the bare throughput" in out
