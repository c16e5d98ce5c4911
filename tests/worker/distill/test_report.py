"""Report: sizes from parameter counts, speed measured, ratios derived."""

from __future__ import annotations

import torch
from torch import nn

from worker.distill.report import build_report, measure_speed, model_section


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
