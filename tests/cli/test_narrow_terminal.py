"""The CLI on a terminal of 80 columns, as a first-time user sees it: every value shown as it
is (a shape in brackets is not markup), every id whole so it can be copied, a job's bar
readable and its end a short summary rather than the whole Job as JSON."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from stillhouse.cli_common import Ctx, Output, print_object, print_rows
from stillhouse.cli_jobs import finish
from stillhouse.cli_progress import job_bar, show
from stillhouse.cli_resources import COLUMNS, NARROW_DROP
from stillhouse.models import Job, JobEvent

CREATED = "2026-12-07T12:54:09.123456Z"


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")


def _table() -> Ctx:
    return Ctx("http://127.0.0.1:8000", "sh_key", Output.table)


def _teacher(i: int) -> dict[str, Any]:
    return {
        "id": f"tch_205e{i:020x}",
        "name": f"mnist-teacher-{i}.pt2",
        "format": "torch_export",
        "status": "ready",
        "input_shape": [None, 64],
        "num_classes": 10,
        "parameters": 118_282,
        "created_at": CREATED,
    }


def _job(i: int) -> dict[str, Any]:
    return {
        "id": f"job_7a1c{i:020x}",
        "status": "succeeded",
        "stage": "evaluating",
        "progress": 1.0,
        "epoch": 25,
        "epochs": 25,
        "metrics": {"train_loss": 0.1417},
        "report": {"agreement_top1": 0.9812},
        "created_at": CREATED,
    }


def test_a_bracketed_value_is_shown_not_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    print_rows(_table(), [_teacher(1)], COLUMNS["teachers"], None, NARROW_DROP["teachers"])
    assert "[null,64]" in capsys.readouterr().out
    print_object(_table(), {"id": "tch_1", "input_shape": [None, 64], "note": "[bold]x[/bold]"})
    out = capsys.readouterr().out
    assert "[null,64]" in out and "[bold]x[/bold]" in out


@pytest.mark.parametrize(("kind", "make"), [("teachers", _teacher), ("jobs", _job)])
def test_ids_are_never_cut_at_80_columns(
    kind: str, make: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [make(i) for i in range(3)]
    print_rows(_table(), rows, COLUMNS[kind], None, NARROW_DROP[kind])
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[0] == "id" and "…" not in "".join(lines)
    assert len(lines) == 1 + len(rows)  # nothing wrapped
    for row in rows:
        assert any(line.split()[0] == row["id"] for line in lines), (row["id"], lines)


def test_a_wide_terminal_keeps_every_column(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    print_rows(_table(), [_job(1)], COLUMNS["jobs"], None, NARROW_DROP["jobs"])
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == list(COLUMNS["jobs"])
    assert "98.12%" in row.split()  # the finished job's agreement, as a percentage


def _event(kind: str, **data: Any) -> JobEvent:
    job = {"id": "job_7a1c0000000000000000000a", "epochs": 25, **data}
    return JobEvent(event=kind, data=job)


def test_the_job_bar_is_readable_at_80_columns() -> None:
    progress = job_bar()
    task = progress.add_task("job", total=1.0, epoch="", loss="", agreement="")
    show(progress, task, _event("progress", status="running", stage="training", epoch=3,
                                progress=0.21, metrics={"train_loss": 0.14172}))  # fmt: skip
    show(progress, task, _event("progress", status="running", stage="training", epoch=3,
                                progress=0.22, metrics={"eval_agreement": 0.973}))  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=80, no_color=True).print(progress.get_renderable())
    (line,) = out.getvalue().splitlines()
    assert len(line) <= 80, line
    assert line.startswith("training") and "22%" in line
    assert "3/25" in line and "loss 0.142" in line and "97.3%" in line
    assert line.index("22%") - line.index("━") >= 15, line  # a bar, not 3 cells


def _finished_job() -> Job:
    from tests.cli.test_models import _report

    report = _report(parameters=60_000, size_bytes_fp32=240_000, size_bytes_fp16=120_000)
    report |= {"compression_ratio": 10.0, "student_accuracy": 0.9713, "teacher_accuracy": 0.99}
    return Job.model_validate(
        {
            "id": "job_7a1c0000000000000000000a",
            "status": "succeeded",
            "epoch": 25,
            "epochs": 25,
            "metrics": {"agreement_top1": 0.97, "train_loss": 0.1417},
            "spec": {"teacher_ids": ["tch_1"], "dataset_id": "ds_1", "training": {"epochs": 25}},
            "created_at": CREATED,
            "started_at": "2026-12-07T12:54:10Z",
            "finished_at": "2026-12-07T12:54:31.5Z",
            "report": report,
            "student_formats": ["onnx", "safetensors"],
        }
    )


def test_jobs_wait_ends_with_a_short_summary_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    finish(_table(), _finished_job())
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) <= 12 and all(len(line) <= 80 for line in lines), lines
    assert "{" not in captured.out and "teacher_ids" not in captured.out
    summary = dict(line.rstrip().split(None, 1) for line in lines if not line.startswith(" "))
    assert summary["job"] == "job_7a1c0000000000000000000a"
    assert summary["status"] == "succeeded"
    assert "97.00%" in captured.out and "97.13% (teacher 99.00%)" in captured.out
    assert "took" in captured.out and "21.5 s" in captured.out
    assert "stillhouse jobs report job_7a1c0000000000000000000a" in captured.err


def test_jobs_wait_prints_the_whole_job_as_json_for_scripts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    finish(Ctx("http://127.0.0.1:8000", "sh_key", Output.json), _finished_job())
    job = json.loads(capsys.readouterr().out)
    assert job["spec"]["training"]["epochs"] == 25 and job["report"]["speedup"] == 3.0


def test_jobs_show_summarises_the_spec_and_report_at_80_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table folds nothing into dozens of lines: a nested value too long for a cell
    says how many fields it has and that --json prints it whole; a short one stays."""
    job = _finished_job()
    print_object(_table(), job)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines) <= 25, out
    assert "report" in out and "fields: --json shows them}" in out
    assert '{"agreement_top1":0.97,"train_loss":0.1417}' in out  # metrics: short, kept
    assert '"dev' not in out


def test_the_report_marks_a_disturbed_speedup_at_80_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stillhouse.cli_jobs import print_report
    from stillhouse.models import Report
    from tests.cli.test_models import _report

    body = _report(parameters=60_000, size_bytes_fp32=240_000, size_bytes_fp16=120_000)
    spread = {"median": 3.0, "min": 2.1, "max": 5.9, "iqr_relative": 0.4, "rounds": 9}
    for disturbed in (False, True):
        report = Report.model_validate(body | {"speedup_spread": spread | {"disturbed": disturbed}})
        print_report(_table(), "job_1", report)
        out = capsys.readouterr().out
        assert all(len(line) <= 80 for line in out.splitlines()), out
        assert "speedup 3.00x" in out
        assert ("disturbed: the machine was busy" in out) is disturbed, out
