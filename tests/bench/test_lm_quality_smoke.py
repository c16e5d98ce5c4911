"""bench/lm_quality.py --quick: a tiny byte-level teacher trained on the stdlib's sources,
two seeds of distilled and twin gpt students at two sizes through the engine; every
perplexity it prints is recomputed from the downloaded ONNX file (the script asserts that
it equals the report's)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(960)
def test_lm_quality_quick_prints_both_twins_per_size() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "bench.lm_quality", "--quick", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    assert "| student (fewer parameters) | distilled ppl | twin ppl (CE only)" in done.stdout
    jobs = [
        json.loads(line)
        for line in (ROOT / "bench/out/lm_quality-quick-jobs.jsonl").read_text().splitlines()
    ]
    assert len(jobs) == 8  # 2 sizes x (distilled, twin) x 2 seeds
    for job in jobs:
        assert math.isfinite(job["ppl"]) and job["ppl"] > 1
        assert job["ppl"] == pytest.approx(job["reported_ppl"], rel=1e-4)
        assert 0 <= job["agreement"] <= 1
