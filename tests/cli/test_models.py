"""The SDK's report and epoch rows are the service's own contracts: a report the engine can
write (an ONNX teacher from another tool, whose size is unknown) is read and shown."""

from __future__ import annotations

from typing import Any

import pytest

from core import contracts
from stillhouse.cli_common import Ctx, Output
from stillhouse.cli_jobs import print_report
from stillhouse.models import EpochMetrics, JobSpec, Report

MEASURE = {"latency_ms_batch1": 0.2, "throughput_per_s": 5000.0}


def _report(**teacher: Any) -> dict[str, Any]:
    student = {**MEASURE, "parameters": 1000, "size_bytes_fp32": 4000, "size_bytes_fp16": 2000}
    return {
        "teacher": {**MEASURE, **teacher},
        "student": student,
        "compression_ratio": None,
        "speedup": 3.0,
        "agreement_top1": 0.97,
        "kl_divergence": 0.01,
        "teacher_accuracy": None,
        "student_accuracy": None,
        "eval_samples": 100,
        "device": "cpu",
        "device_name": "AMD EPYC",
        "soft_labels": "cached",
        "timings_s": {"training": 1.0},
        "a_field_from_a_newer_server": 1,
    }


def test_sdk_models_are_the_service_contracts() -> None:
    assert issubclass(Report, contracts.Report)
    assert issubclass(EpochMetrics, contracts.EpochRecord)
    body = _report(parameters=None, size_bytes_fp32=None, size_bytes_fp16=None)
    contracts.Report.model_validate(body)  # what the service can write...
    report = Report.model_validate(body)  # ...the SDK reads, keeping fields it does not know
    assert report.teacher.parameters is None and report["a_field_from_a_newer_server"] == 1
    row = EpochMetrics.model_validate(
        {"epoch": 1, "train_loss": 0.5, "soft_loss": 0.5, "hard_loss": None,
         "eval_agreement": 0.9, "learning_rate": 0.01, "seconds": 1.0, "attempt": 2}
    )  # fmt: skip
    assert row.attempt == 2
    assert JobSpec(teacher_ids=["t"], dataset_id="d").training.epochs > 0


def test_the_cli_report_shows_a_teacher_of_unknown_size(capsys: pytest.CaptureFixture[str]) -> None:
    body = _report(parameters=None, size_bytes_fp32=None, size_bytes_fp16=None)
    print_report(Ctx("http://x", "k", Output.table), "job_1", Report.model_validate(body))
    out = capsys.readouterr().out
    assert "unknown" in out and "1,000" in out and "compression unknown" in out
    assert "AMD EPYC" in out
