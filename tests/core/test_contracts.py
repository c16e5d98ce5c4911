"""The contracts that cross processes: strict where a wrong type would be misread, and a
line that is not an event is an error event, never a dict read later."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.contracts import (
    CHILD_REQUEST,
    DistillRequest,
    EpochEvent,
    EpochRecord,
    ErrorEvent,
    FileRef,
    Outcome,
    ProgressEvent,
    StoppedEvent,
    parse_event,
)
from core.enums import ExportFormat, Stage
from core.spec import JobSpec

BASE = {"teacher_ids": ["tch_1"], "dataset_id": "ds_1"}


def _locations(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"training": {"epochs": "5"}}, "training.epochs"),
        ({"training": {"learning_rate": "0.1"}}, "training.learning_rate"),
        ({"distillation": {"temperature": True}}, "distillation.temperature"),
        ({"teacher_ids": [5]}, "teacher_ids.0"),
        ({"export_formats": ["pickle"]}, "export_formats.0"),
        ({"distillation": {"soft_labels": "sometimes"}}, "distillation.soft_labels"),
        ({"training": {"epochs": 5, "epoch": 5}}, "training.epoch"),
    ],
)
def test_spec_refuses_wrong_types_and_names_the_field(patch: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**BASE, **patch})
    assert where in _locations(info.value)


@pytest.mark.parametrize(
    ("body", "rows", "epochs"),
    [
        ({}, 100_000, 20),  # 704 steps an epoch: the default is plenty
        ({}, 1_078, 75),  # 970 rows after the 10 % split: 8 steps an epoch, 600 steps
        ({"eval_dataset_id": "ds_e"}, 1_078, 67),  # no split: 9 steps an epoch
        ({}, 150, 300),  # 135 rows after the split: two steps an epoch
        ({}, 100, 600),  # one step an epoch: 600 epochs
        ({"training": {"min_steps": 5_000}}, 100, 600),  # capped
        ({"training": {"batch_size": 32}}, 1_078, 20),  # 31 steps an epoch
        ({"training": {"min_steps": 0}}, 1_078, 20),
        ({"training": {"epochs": 3}}, 1_078, 3),  # asked for: kept
        ({"training": {"epochs": 20}}, 1_078, 20),
    ],
)
def test_left_out_epochs_follow_the_transfer_sets_size(
    body: dict[str, object], rows: int, epochs: int
) -> None:
    spec = JobSpec.model_validate({**BASE, **body}).scheduled(rows)
    assert spec.training.epochs == epochs
    # Stored and read back (the worker's copy), the choice is kept, not made again.
    again = JobSpec.model_validate(spec.model_dump(mode="json")).scheduled(10)
    assert again.training.epochs == epochs


@pytest.mark.parametrize(
    ("body", "rows", "munge"),
    [
        ({}, 1_078, 0.5),  # small and tabular: MUNGE samples beside the long schedule
        ({}, 100_000, 0.0),  # 20 epochs: not small
        ({"training": {"epochs": 60}}, 1_078, 0.0),  # a chosen schedule is left as it is
        ({"augmentation": {"noise": 0.1}}, 1_078, 0.0),  # chosen augmentation: kept
        ({"augmentation": {"munge": 0.2}}, 1_078, 0.2),
        ({"distillation": {"soft_labels": "cached"}}, 1_078, 0.0),
        ({"distillation": {"loss": "kd"}}, 1_078, 0.0),
        ({"sweep": {"temperature": [2.0, 4.0]}}, 1_078, 0.0),  # one cached soft-label pass
    ],
)
def test_a_small_tabular_set_left_to_the_service_gets_munge(
    body: dict[str, object], rows: int, munge: float
) -> None:
    spec = JobSpec.model_validate({**BASE, **body})
    assert spec.scheduled(rows, tabular=True).augmentation.munge == munge
    assert spec.scheduled(rows).augmentation.munge == (0.2 if munge == 0.2 else 0.0)


def test_spec_fills_defaults_and_takes_ints_for_floats() -> None:
    spec = JobSpec.model_validate({**BASE, "distillation": {"temperature": 2}})
    assert spec.distillation.temperature == 2.0 and spec.training.epochs == 20
    assert spec.export_formats == list(ExportFormat)
    dumped = spec.model_dump(mode="json")
    assert dumped["export_formats"] == [
        "torch_export",
        "onnx",
        "safetensors",
        "onnx_fp16",
        "onnx_int8",
    ]
    assert dumped["export"]["formats"] == dumped["export_formats"]
    assert JobSpec.model_validate(dumped) == spec  # what the database keeps reads back


def test_export_formats_may_be_given_as_export_dot_formats() -> None:
    spec = JobSpec.model_validate({**BASE, "export": {"formats": ["onnx_int8", "onnx_int8"]}})
    assert spec.export_formats == ["onnx_int8"] == spec.export.formats
    same = JobSpec.model_validate(
        {**BASE, "export_formats": ["onnx"], "export": {"formats": ["onnx"]}}
    )
    assert same.export_formats == ["onnx"]
    with pytest.raises(ValidationError, match="differ"):
        JobSpec.model_validate(
            {**BASE, "export_formats": ["onnx"], "export": {"formats": ["onnx_fp16"]}}
        )
    for bad in ({"agreement_margin": -0.1}, {"calibration_samples": 0}, {"formats": []}):
        with pytest.raises(ValidationError) as info:
            JobSpec.model_validate({**BASE, "export": bad})
        assert _locations(info.value)[0].startswith("export.")


def test_child_request_round_trips_as_json() -> None:
    ref = FileRef(path="/x", format="npz", sha256="0" * 64)
    request = DistillRequest(
        teachers=[ref],
        transfer=ref,
        eval=None,
        spec=JobSpec.model_validate(BASE),
        workdir="/w",
        cache_dir="/c",
        stop_file="/w/STOP",
        checkpoint_every=7,
        checkpoint_every_seconds=30.0,
        device="cpu",
    )
    assert CHILD_REQUEST.validate_json(request.model_dump_json()) == request
    with pytest.raises(ValidationError):
        CHILD_REQUEST.validate_json('{"op": "distill", "teachers": []}')
    with pytest.raises(ValidationError):
        CHILD_REQUEST.validate_json('{"op": "format_disk"}')


def test_events_round_trip() -> None:
    progress = ProgressEvent(stage=Stage.TRAINING, progress=0.5, epochs=3, epoch=2, step=10)
    record = EpochRecord(
        epoch=1,
        train_loss=0.5,
        soft_loss=0.4,
        hard_loss=None,
        eval_agreement=0.9,
        learning_rate=1e-3,
        seconds=0.2,
    )
    for event in (progress, EpochEvent(record=record), StoppedEvent(reason="cancel")):
        assert parse_event(event.model_dump_json()) == event
    with pytest.raises(ValidationError):
        StoppedEvent.model_validate({"reason": "bored"})


@pytest.mark.parametrize(
    "line",
    [
        "Warning: something a library printed",
        '{"event": "progress", "stage": "training"}',  # fields missing
        '{"event": "launch_missiles"}',  # foreign kind
        '{"event": "progress", "stage": "dreaming", "progress": 0.1, "epochs": 1}',
        '{"event": "result", "files": {"pickle": "/x"}, "report": {}}',
    ],
)
def test_a_line_that_is_not_an_event_is_an_error_event(line: str) -> None:
    event = parse_event(line)
    assert isinstance(event, ErrorEvent) and event.code == "bad_child_output"
    assert "not an event" in event.message


def test_outcome_carries_a_typed_report_and_keeps_extra_fields() -> None:
    measure = {
        "parameters": 10,
        "size_bytes_fp32": 40,
        "size_bytes_fp16": 20,
        "latency_ms_batch1": 0.1,
        "throughput_per_s": 100.0,
    }
    report = {
        "teacher": measure,
        "student": measure,
        "compression_ratio": 1.0,
        "speedup": 1.0,
        "agreement_top1": 1.0,
        "kl_divergence": 0.0,
        "teacher_accuracy": None,
        "student_accuracy": None,
        "eval_samples": 3,
        "device": "cpu",
        "soft_labels": "cached",
        "timings_s": {"training": 1.0},
        "steps": 12,  # a field the contract does not name passes through
    }
    line = Outcome.model_validate({"files": {"onnx": "/s.onnx"}, "report": report})
    parsed = parse_event(line.model_dump_json())
    assert isinstance(parsed, Outcome)
    assert parsed.files == {ExportFormat.ONNX: Path("/s.onnx")}
    assert parsed.report.model_dump()["steps"] == 12
