"""The CLI's tables on a terminal of 80 columns, as a first-time user sees them: every value
shown as it is (a shape in brackets is not markup), every id whole so it can be copied."""

from __future__ import annotations

from typing import Any

import pytest

from stillhouse.cli_common import Ctx, Output, print_object, print_rows
from stillhouse.cli_resources import COLUMNS, NARROW_DROP

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
