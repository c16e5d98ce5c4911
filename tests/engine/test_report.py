"""Report: sizes from parameter counts, speed measured, ratios derived."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from engine.report import (
    PAIR_ROUNDS,
    build_report,
    measure_pair,
    measure_speed,
    model_section,
)


def test_speed_is_measured_at_batch_1_and_256() -> None:
    seen: list[int] = []
    model = nn.Linear(8, 3)

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return model(x)

    speed = measure_speed(fn, torch.randn(10, 8), torch.device("cpu"))
    assert speed["latency_ms_batch1"] > 0 and speed["throughput_per_s"] > 0
    assert set(seen) == {1, 256}


def test_sizes_and_ratios() -> None:
    teacher = model_section(
        1000, {"latency_ms_batch1": 2.0, "throughput_per_s": 100.0}, "torch-cpu"
    )
    student = model_section(100, {"latency_ms_batch1": 1.0, "throughput_per_s": 400.0}, "torch-cpu")
    assert teacher["size_bytes_fp32"] == 4000 and teacher["size_bytes_fp16"] == 2000
    report = build_report(
        teacher=teacher,
        student=student,
        metrics={"agreement_top1": 0.9},
        device=torch.device("cpu"),
        soft_labels="cached",
        timings={"training": 1.23456},
        extra={},
    )
    assert report["compression_ratio"] == 10.0
    assert report["speedup"] == 4.0
    assert report["timings_s"] == {"training": 1.235}
    assert report["device"] == "cpu"


def _sleeper(seconds: float, calls: list[str], name: str) -> Callable[[torch.Tensor], None]:
    def fn(x: torch.Tensor) -> None:
        calls.append(name)
        time.sleep(seconds)  # a call's cost, whatever the batch: sleeps, not the CPU

    return fn


def test_teacher_and_student_are_timed_interleaved_and_the_speedup_is_their_ratio() -> None:
    calls: list[str] = []
    x = torch.zeros(4, 2)
    teacher, student, speedup = measure_pair(
        _sleeper(2e-3, calls, "t"), x, _sleeper(5e-4, calls, "s"), x, torch.device("cpu")
    )
    assert speedup["rounds"] == PAIR_ROUNDS
    assert 2.5 < speedup["median"] < 5.5  # 4x in sleeps; the rest is timer overshoot
    assert speedup["min"] <= speedup["median"] <= speedup["max"]
    assert teacher["throughput_per_s"] < student["throughput_per_s"]
    # Interleaved: the models take turns, round after round (not all of one, then the other).
    turns = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert len(turns) >= PAIR_ROUNDS


def test_a_load_that_comes_and_goes_marks_the_speedup_disturbed() -> None:
    calls: list[str] = []
    x = torch.zeros(4, 2)
    rounds = {"n": 0}

    def student(xb: torch.Tensor) -> None:
        calls.append("s")
        # Every other round of the student, the machine is busy: 3x slower.
        slow = (sum(1 for a, b in zip(calls, calls[1:], strict=False) if a != b) // 2) % 2
        rounds["n"] += slow
        time.sleep(5e-4 * (3 if slow else 1))

    _, _, speedup = measure_pair(_sleeper(4e-5, calls, "t"), x, student, x, torch.device("cpu"))
    assert rounds["n"] > 0
    assert speedup["max"] / speedup["min"] > 2
    assert speedup["disturbed"] is True


def _burner(iterations: int) -> Callable[[torch.Tensor], int]:
    def fn(x: torch.Tensor) -> int:
        total = 0
        for i in range(iterations):  # CPU work on the calling thread
            total += i
        return total

    return fn


def test_thread_cpu_timing_counts_the_work_not_the_wait() -> None:
    x = torch.zeros(4, 2)
    _, _, speedup = measure_pair(
        _burner(20_000), x, _burner(5_000), x, torch.device("cpu"), clock="thread_cpu"
    )
    assert speedup["clock"] == "thread_cpu"
    assert 2.5 < speedup["median"] < 5.5  # 4x the iterations
    assert speedup["wall_over_cpu"] is not None and speedup["wall_over_cpu"] >= 0.9
    # Sleeping is no work: a model that only waits measures as (almost) free.
    calls: list[str] = []
    _, _, idle = measure_pair(
        _sleeper(2e-3, calls, "t"), x, _burner(5_000), x, torch.device("cpu"), clock="thread_cpu"
    )
    assert idle["median"] < 0.5
