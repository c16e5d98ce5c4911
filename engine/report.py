"""The report (``core.contracts.Report``): sizes, speed, agreement, timings.

Speed is measured on the worker's device: the median wall time of one batch of 1
(latency) and of 256 (throughput = 256 / median), after warm-up, with a CUDA synchronize
around each timed call. Teacher and student are timed interleaved (``measure_pair``): in
``PAIR_ROUNDS`` short rounds, alternating which goes first, so a load that comes and goes
weighs on both alike; the speedup is the median of the rounds' ratios, reported with their
spread, and a spread past ``DISTURBED_SPREAD`` marks the measurement as disturbed. Sizes:
parameters × 4 bytes (fp32) and × 2 (fp16); the exported files' actual sizes are added as
``file_bytes``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from core.enums import ExportFormat
from engine.device import device_name, synchronize

THROUGHPUT_BATCH = 256
WARMUP_RUNS = 3
MIN_RUNS, MAX_RUNS = 5, 50
BUDGET_S = 0.3  # per measurement: 0.3 and 1.0 gave medians within the same ±3 % (MNIST MLP)


PAIR_ROUNDS = 7
PAIR_MIN_RUNS = 3  # a round's runs of each model (more within the round's budget)
DISTURBED_SPREAD = 0.25  # interquartile range of the rounds' speedups / their median
BUSY_WALL_OVER_CPU = 1.25  # thread-CPU timing: wall time this much longer = a busy machine
Clock = Literal["wall", "thread_cpu"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread (the caller's): what ``thread_cpu`` timing needs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _median_seconds(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    device: torch.device,
    *,
    warmup: int = WARMUP_RUNS,
    min_runs: int = MIN_RUNS,
    budget_s: float = BUDGET_S,
    clock: Clock = "wall",
    stretch: list[float] | None = None,
) -> float:
    """The median of timed calls. ``thread_cpu``: the calling thread's CPU time (for a model
    that computes on that thread alone: torch on one thread), which a busy machine does not
    stretch; each call's wall time over its CPU time then goes to ``stretch``."""
    read = time.thread_time if clock == "thread_cpu" else time.perf_counter
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        synchronize(device)
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < MAX_RUNS and (len(times) < min_runs or time.perf_counter() < deadline):
            wall, start = time.perf_counter(), read()
            fn(x)
            synchronize(device)
            elapsed = read() - start
            times.append(elapsed)
            if stretch is not None and elapsed > 0:
                stretch.append((time.perf_counter() - wall) / elapsed)
    return max(statistics.median(times), 1e-9)


def measure_speed(
    fn: Callable[[torch.Tensor], Any],
    sample: torch.Tensor,
    device: torch.device,
    batch: int = THROUGHPUT_BATCH,
) -> dict[str, float]:
    """``sample``: real inputs (any number of rows), tiled up to the throughput ``batch``."""
    latency = _median_seconds(fn, sample[:1].contiguous(), device)
    batch_time = _median_seconds(fn, _tiled(sample, batch), device)
    return {
        "latency_ms_batch1": latency * 1e3,
        "throughput_per_s": batch / batch_time,
    }


def _tiled(sample: torch.Tensor, batch: int) -> torch.Tensor:
    """``sample``'s rows repeated up to ``batch`` rows."""
    reps = -(-batch // len(sample))
    return sample.repeat(reps, *([1] * (sample.dim() - 1)))[:batch].contiguous()


def measure_pair(
    teacher: Callable[[torch.Tensor], Any],
    teacher_sample: torch.Tensor,
    student: Callable[[torch.Tensor], Any],
    student_sample: torch.Tensor,
    device: torch.device,
    clock: Clock = "wall",
    batch: int = THROUGHPUT_BATCH,
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Teacher and student speed measured interleaved; returns (teacher, student, speedup).

    Each of ``PAIR_ROUNDS`` rounds times both models at batch 1 and at the throughput batch
    (the median of a few runs each), the first model alternating between rounds. A model's
    figure is the median of its rounds; ``speedup`` is the median of the rounds' own
    throughput ratios, with their minimum, maximum and interquartile range, and
    ``disturbed`` when that range passes ``DISTURBED_SPREAD`` of the median.

    ``clock="thread_cpu"`` (both models computing on the calling thread: torch on one
    thread) times CPU time, so other work on the machine does not change the figures; the
    measurement is then also ``disturbed`` when the calls' wall time ran past their CPU time
    by ``BUSY_WALL_OVER_CPU`` (the figures hold; the flag says the machine was busy)."""
    inputs = {
        "teacher": (teacher, teacher_sample[:1].contiguous(), _tiled(teacher_sample, batch)),
        "student": (student, student_sample[:1].contiguous(), _tiled(student_sample, batch)),
    }
    for fn, one, big in inputs.values():  # warm-up, once
        _median_seconds(fn, one, device, min_runs=1, budget_s=0.0)
        _median_seconds(fn, big, device, min_runs=1, budget_s=0.0)
    stretch: list[float] = []
    rounds: dict[str, dict[str, list[float]]] = {name: {"one": [], "big": []} for name in inputs}
    budget = BUDGET_S / PAIR_ROUNDS
    for r in range(PAIR_ROUNDS):
        order = ("teacher", "student") if r % 2 == 0 else ("student", "teacher")
        for name in order:
            fn, one, big = inputs[name]
            for key, x in (("one", one), ("big", big)):
                seconds = _median_seconds(
                    fn,
                    x,
                    device,
                    warmup=0,
                    min_runs=PAIR_MIN_RUNS,
                    budget_s=budget,
                    clock=clock,
                    stretch=stretch,
                )
                rounds[name][key].append(seconds)
    speeds = {
        name: {
            "latency_ms_batch1": statistics.median(times["one"]) * 1e3,
            "throughput_per_s": batch / statistics.median(times["big"]),
            "throughput_batch": batch,
        }
        for name, times in rounds.items()
    }
    ratios = [
        t / s for t, s in zip(rounds["teacher"]["big"], rounds["student"]["big"], strict=True)
    ]
    quartiles = statistics.quantiles(ratios, n=4)
    median = statistics.median(ratios)
    spread = (quartiles[2] - quartiles[0]) / median
    wall_over_cpu = statistics.median(stretch) if clock == "thread_cpu" and stretch else None
    speedup = {
        "median": median,
        "min": min(ratios),
        "max": max(ratios),
        "iqr_relative": spread,
        "rounds": PAIR_ROUNDS,
        "clock": clock,
        "wall_over_cpu": wall_over_cpu,
        "disturbed": spread > DISTURBED_SPREAD
        or (wall_over_cpu is not None and wall_over_cpu > BUSY_WALL_OVER_CPU),
    }
    return speeds["teacher"], speeds["student"], speedup


def model_section(
    parameters: int | None,
    speed: dict[str, float],
    runtime: str,
    files: dict[ExportFormat, Path] | None = None,
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
    speedup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``speedup``: from ``measure_pair``; without it, the ratio of the two throughputs."""
    t_params, s_params = teacher["parameters"], student["parameters"]
    ratio = student["throughput_per_s"] / teacher["throughput_per_s"]
    return {
        "teacher": teacher,
        "student": student,
        "compression_ratio": None if not t_params else t_params / s_params,
        "speedup": ratio if speedup is None else speedup["median"],
        "speedup_spread": speedup,
        **metrics,
        "device": device.type,
        "device_name": device_name(device),
        "soft_labels": soft_labels,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        **extra,
    }
