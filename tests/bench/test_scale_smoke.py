"""bench/scale.py at smoke size: three transfer sets through the real service, memory sampled.

Not a timed test: it checks that the benchmark runs end to end, samples the job worker's
memory while jobs run, cleans up its generated files and prints its table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _scale(tmp_path: Path, *extra: str) -> str:
    """bench.scale --quick (with ``extra``) run as a user runs it; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "bench.scale",
            *extra,
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = done.stdout
    assert "| 8,000 | " in out and "time per sample, largest / smallest" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "," in line[2:7]]
    assert len(rows) == 3
    # Every job was sampled while it ran, and the worker tree was seen holding memory.
    assert all(int(row.rstrip(" |").rsplit("|", 1)[1]) > 0 for row in rows)
    assert not (tmp_path / "scale" / "var").exists()
    return out


@pytest.mark.slow
def test_scale_benchmark_prints_memory_and_time_per_sample(tmp_path: Path) -> None:
    _scale(tmp_path)
    assert not list((tmp_path / "scale").glob("*.npy"))
    assert (tmp_path / "scale.md").exists()


@pytest.mark.slow
def test_scale_benchmark_text_mode_streams_jsonl_through_a_text_cnn(tmp_path: Path) -> None:
    """``--text --quick``: JSON Lines sentences, an ONNX text teacher with its tokenizer.json,
    text_cnn students; the same table, memory sampled, the generated files removed."""
    out = _scale(tmp_path, "--text")
    assert "student text_cnn" in out and "| file MiB |" in out
    assert not list((tmp_path / "scale").glob("*.jsonl"))
    assert (tmp_path / "scale_text.md").exists()
