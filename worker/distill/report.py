"""The report (``core.contracts.Report``): sizes, speed, agreement, timings.

Speed is measured on the worker's device: the median wall time of one batch of 1
(latency) and of 256 (throughput = 256 / median), after warm-up, with a CUDA synchronize
around each timed call. Sizes: parameters × 4 bytes (fp32) and × 2 (fp16); the exported
files' actual sizes are added as ``file_bytes``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worker.distill.device import device_name, synchronize

THROUGHPUT_BATCH = 256
WARMUP_RUNS = 3
MIN_RUNS, MAX_RUNS = 5, 50
BUDGET_S = 0.3  # per measurement: 0.3 and 1.0 gave medians within the same ±3 % (MNIST MLP)


def _median_seconds(
    fn: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device
) -> float:
    with torch.inference_mode():
        for _ in range(WARMUP_RUNS):
            fn(x)
        synchronize(device)
        times: list[float] = []
        deadline = time.perf_counter() + BUDGET_S
        while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() < deadline):
            start = time.perf_counter()
            fn(x)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(
    fn: Callable[[torch.Tensor], Any],
    sample: torch.Tensor,
    device: torch.device,
    batch: int = THROUGHPUT_BATCH,
) -> dict[str, float]:
    """``sample``: real inputs (any number of rows), tiled up to the throughput ``batch``."""
    reps = -(-batch // len(sample))
    big = sample.repeat(reps, *([1] * (sample.dim() - 1)))[:batch].contiguous()
    latency = _median_seconds(fn, sample[:1].contiguous(), device)
    batch_time = _median_seconds(fn, big, device)
    return {
        "latency_ms_batch1": latency * 1e3,
        "throughput_per_s": batch / batch_time,
    }


def model_section(
    parameters: int | None,
    speed: dict[str, float],
    runtime: str,
    files: dict[str, Path] | None = None,
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "parameters": parameters,
        "size_bytes_fp32": None if parameters is None else 4 * parameters,
        "size_bytes_fp16": None if parameters is None else 2 * parameters,
        **speed,
        "runtime": runtime,
    }
    if files:
        section["file_bytes"] = {fmt: p.stat().st_size for fmt, p in files.items()}
    return section


def build_report(
    *,
    teacher: dict[str, Any],
    student: dict[str, Any],
    metrics: dict[str, Any],
    device: torch.device,
    soft_labels: str,
    timings: dict[str, float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    t_params, s_params = teacher["parameters"], student["parameters"]
    return {
        "teacher": teacher,
        "student": student,
        "compression_ratio": None if not t_params else t_params / s_params,
        "speedup": student["throughput_per_s"] / teacher["throughput_per_s"],
        **metrics,
        "device": device.type,
        "device_name": device_name(device),
        "soft_labels": soft_labels,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        **extra,
    }
