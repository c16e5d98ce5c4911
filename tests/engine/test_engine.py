"""The engine end to end: files in, student files and an honest report out."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from core.contracts import FileRef, Outcome, Report
from core.spec import JobSpec
from engine.engine import distill, run_distillation
from engine.errors import Stopped, UserError
from engine.students import floored_target
from tests.engine.helpers import ModuleTeacher, digits_split, fit


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    x, y, xe, ye = digits_split()
    return x[:400], y[:400], xe[:200], ye[:200]


@pytest.fixture(scope="module")
def teacher_module(digits: tuple[torch.Tensor, ...]) -> nn.Module:
    x, y, _, _ = digits
    torch.manual_seed(0)
    return fit(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)), x, y, epochs=10)


def spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "training": {"epochs": 2, "batch_size": 64, "seed": 1} | training,
            "export_formats": ["safetensors"],
        }
    )


def run(
    tmp: Path, teacher: nn.Module, digits: tuple[torch.Tensor, ...], job: JobSpec, **kw: Any
) -> Outcome:
    x, _, xe, ye = digits
    teachers = kw.pop("teachers", [ModuleTeacher(teacher, 10, [None, 64])])
    return distill(
        teachers,
        x,
        None,
        xe,
        ye,
        job,
        workdir=tmp / "work",
        cache_dir=tmp / "cache",
        identity={"teachers": ["sha-t"] * len(teachers), "dataset": "sha-d"},
        **kw,
    )


def test_report_has_every_api_field_and_the_student_is_smaller(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    job = spec().model_copy(update={"export_formats": ["torch_export", "onnx", "safetensors"]})
    events: list[dict[str, Any]] = []
    result = run(tmp_path, teacher_module, digits, job, on_progress=events.append)
    report = result.report
    # The API's fields are the model's: the report is one, and its JSON is the API's answer.
    assert isinstance(report, Report)
    assert Report.model_validate_json(report.model_dump_json()).model_dump(
        mode="json"
    ) == report.model_dump(mode="json")
    assert report.student.size_bytes_fp32 == 4 * report.student.parameters
    assert set(result.files) == {"torch_export", "onnx", "safetensors"}
    assert report.compression_ratio >= 5
    spread = report.speedup_spread  # teacher and student timed in turns
    assert spread is not None
    assert report.speedup == spread.median and spread.rounds == 7
    assert spread.min <= spread.median <= spread.max
    assert isinstance(spread.disturbed, bool)
    assert set(report.timings_s) == {
        "export_check",
        "soft_labeling",
        "training",
        "evaluating",
        "exporting",
    }
    stages = [e["stage"] for e in events]
    assert stages == sorted(
        stages, key=["soft_labeling", "training", "evaluating", "exporting"].index
    )
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    assert events[-1]["progress"] == 1.0
    epoch_events = [e for e in events if "eval_agreement" in e["metrics"]]
    assert [e["epoch"] for e in epoch_events] == [1, 2]


def test_reported_numbers_are_what_the_downloaded_onnx_gives(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    job = spec().model_copy(update={"export_formats": ["onnx"]})
    result = run(tmp_path, teacher_module, digits, job)
    _, _, xe, ye = digits
    session = ort.InferenceSession(str(result.files["onnx"]), providers=["CPUExecutionProvider"])
    student = session.run(None, {session.get_inputs()[0].name: xe.numpy()})[0]
    teacher = teacher_module(xe).detach().numpy()
    assert result.report.agreement_top1 == np.mean(student.argmax(1) == teacher.argmax(1))
    assert result.report.student_accuracy == np.mean(student.argmax(1) == ye.numpy())
    assert result.report.teacher_accuracy == np.mean(teacher.argmax(1) == ye.numpy())
    p = torch.softmax(torch.from_numpy(teacher).double(), -1)
    kl = (
        (torch.xlogy(p, p) - p * torch.log_softmax(torch.from_numpy(student).double(), -1))
        .sum(-1)
        .mean()
    )
    assert result.report.kl_divergence == pytest.approx(float(kl), rel=1e-6)
    assert result.report.metrics_source == "onnx"


def test_every_variant_is_reported_as_a_user_measures_it(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    job = spec().model_copy(update={"export_formats": ["onnx", "onnx_fp16", "onnx_int8"]})
    result = run(tmp_path, teacher_module, digits, job)
    _, _, xe, ye = digits
    teacher = teacher_module(xe).detach().numpy().argmax(1)
    variants = {v.format: v for v in result.report.variants or []}
    assert set(variants) == {"onnx", "onnx_fp16", "onnx_int8"} == set(result.files)
    for fmt, row in variants.items():
        path = result.files[fmt]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        student = session.run(None, {"input": xe.numpy()})[0].argmax(1)
        assert row.agreement_top1 == np.mean(student == teacher), fmt
        assert row.student_accuracy == np.mean(student == ye.numpy()), fmt
        assert row.size_bytes == path.stat().st_size
        assert row.latency_ms_batch1 > 0 and row.throughput_per_s > 0
        assert row.throughput_batch == 32 and row.runtime == "onnxruntime-cpu"
    fp32 = variants["onnx"].agreement_top1
    assert variants["onnx"].agreement_loss is None
    for fmt in ("onnx_fp16", "onnx_int8"):
        loss = variants[fmt].agreement_loss
        assert loss == pytest.approx(fp32 - variants[fmt].agreement_top1)
        assert variants[fmt].within_margin == (loss <= 0.005 + 1e-12)
    # A 4 k-weight student: the scales and zero points of each channel weigh in.
    assert variants["onnx_int8"].size_bytes < 0.8 * variants["onnx"].size_bytes
    assert result.report.agreement_top1 == fp32  # the student is the fp32 file


def test_same_seed_gives_the_same_student_bytes(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    a = run(tmp_path / "a", teacher_module, digits, spec())
    b = run(tmp_path / "b", teacher_module, digits, spec())
    assert a.files["safetensors"].read_bytes() == b.files["safetensors"].read_bytes()


def test_stopped_job_resumes_to_the_same_bytes(
    tmp_path: Path, teacher_module: nn.Module, digits: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import trainer

    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)  # the probe counts steps
    straight = run(tmp_path / "straight", teacher_module, digits, spec(epochs=3))
    calls = {"n": 0}

    def stop_after_8_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 8

    with pytest.raises(Stopped):
        run(
            tmp_path / "resumed",
            teacher_module,
            digits,
            spec(epochs=3),
            should_stop=stop_after_8_steps,
            checkpoint_every=5,
        )
    resumed = run(tmp_path / "resumed", teacher_module, digits, spec(epochs=3), checkpoint_every=5)
    assert resumed.files["safetensors"].read_bytes() == straight.files["safetensors"].read_bytes()


class CountingTeacher(ModuleTeacher):
    rows = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        CountingTeacher.rows += len(x)
        return super().__call__(x)


def test_soft_labels_are_reused_by_a_job_with_another_temperature(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    teacher = CountingTeacher(teacher_module, 10, [None, 64])
    events: list[dict[str, Any]] = []
    run(tmp_path, teacher_module, digits, spec(), teachers=[teacher], on_event=events.append)
    first = CountingTeacher.rows
    # The worker hears which cached file holds them (it copies it to shared storage).
    (key,) = [e["key"] for e in events if e["event"] == "soft_labels"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"soft-labels-{key}.safetensors"]
    hot = spec().model_copy(
        update={"distillation": spec().distillation.model_copy(update={"temperature": 8.0})}
    )
    CountingTeacher.rows = 0
    (tmp_path / "work").rename(tmp_path / "old-work")
    run(tmp_path, teacher_module, digits, hot, teachers=[teacher])
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert CountingTeacher.rows < first - 300  # only the eval set and timing, not the 400 rows


def test_online_mode_and_an_ensemble(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    torch.manual_seed(5)
    other = nn.Sequential(nn.Linear(64, 10))
    job = spec().model_copy(
        update={"distillation": spec().distillation.model_copy(update={"soft_labels": "online"})}
    )
    result = run(
        tmp_path,
        teacher_module,
        digits,
        job,
        teachers=[
            ModuleTeacher(teacher_module, 10, [None, 64]),
            ModuleTeacher(other, 10, [None, 64]),
        ],
    )
    assert result.report.soft_labels == "online"
    assert result.report.teachers == 2
    assert not (tmp_path / "cache").exists()
    each = result.report.teacher_parameters_each
    assert result.report.teacher.parameters == sum(each)
    # Sized from the largest member (a tenth, floored at 20-20 hidden units for 10 classes).
    target = floored_target(0.1 * max(each), max(each), "auto", (64,), 10)
    assert target > 0.1 * max(each)
    assert result.report.student_target_parameters == round(target)


def test_without_an_eval_set_a_reproducible_split_is_held_out(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    x, y, _, _ = digits
    result = distill(
        [ModuleTeacher(teacher_module, 10, [None, 64])],
        x,
        y,
        None,
        None,
        spec(),
        workdir=tmp_path,
        cache_dir=None,
    )
    split = result.report.eval_split
    perm = np.random.default_rng(split["seed"]).permutation(len(x))
    held = np.sort(perm[: max(1, round(split["fraction"] * len(x)))]).astype("<i8")
    assert split["indices_sha256"] == hashlib.sha256(held.tobytes()).hexdigest()
    assert result.report.eval_samples == len(held) == 40
    assert result.report.train_samples == 360


def test_mismatched_shapes_are_a_user_error(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    with pytest.raises(UserError, match="shape"):
        run(
            tmp_path,
            teacher_module,
            digits,
            spec(),
            teachers=[ModuleTeacher(teacher_module, 10, [None, 32])],
        )


def test_run_distillation_from_pt2_and_onnx_files(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    x, y, xe, ye = digits
    example = (x[:4],)
    pt2, onnx_path = tmp_path / "t.pt2", tmp_path / "t.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(
        torch.export.export(teacher_module, example, dynamic_shapes=({0: batch},)), pt2
    )
    from engine.export import _quiet_exporter

    with _quiet_exporter():
        torch.onnx.export(
            teacher_module,
            example,
            str(onnx_path),
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    np.savez(tmp_path / "train.npz", x=x.numpy())
    np.savez(tmp_path / "eval.npz", x=xe.numpy(), y=ye.numpy())

    result = run_distillation(
        [FileRef.of(pt2, "torch_export"), FileRef.of(onnx_path, "onnx")],
        FileRef.of(tmp_path / "train.npz", "npz"),
        FileRef.of(tmp_path / "eval.npz", "npz"),
        spec().model_copy(update={"export_formats": ["onnx"]}),
        workdir=tmp_path / "work",
        cache_dir=tmp_path / "cache",
    )
    assert result.report.teachers == 2
    assert result.report.eval_samples == 200
    assert result.files["onnx"].exists()


def test_the_final_train_loss_is_the_last_epochs_as_metrics_has_it(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    """One quantity under one name: the report's final_train_loss, the job's final
    train_loss and each epoch's progress loss are the epoch's mean, as its /metrics row."""
    progress: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    result = run(
        tmp_path,
        teacher_module,
        digits,
        spec(epochs=3),
        on_progress=progress.append,
        on_event=history.append,
    )
    records = [e["record"] for e in history if e["event"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert result.report.final_train_loss == records[-1]["train_loss"]
    assert result.metrics["train_loss"] == records[-1]["train_loss"]
    epoch_ends = [e for e in progress if "eval_agreement" in e["metrics"]]
    assert [(e["epoch"], e["metrics"]["train_loss"]) for e in epoch_ends] == [
        (r["epoch"], r["train_loss"]) for r in records
    ]
    assert progress[-1]["metrics"]["train_loss"] == records[-1]["train_loss"]
