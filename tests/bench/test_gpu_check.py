"""bench/gpu_check.py runs on CPU in `make test`, so the GPU check cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(ROOT / "bench" / "gpu_check.py"),
            "--device",
            "cpu",
            "--quick",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "device cpu" in done.stdout
    assert "agreement" in done.stdout and done.stdout.rstrip().endswith("OK")


def test_gpu_check_refuses_cuda_where_there_is_none() -> None:
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cuda"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "CUDA is not available" in done.stderr
