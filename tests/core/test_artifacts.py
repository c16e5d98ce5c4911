"""A finished job's student files: the default student, a sweep's candidates, each once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.artifacts import Artifact, Artifacts


def _art(name: str) -> dict[str, Any]:
    return {
        "file_id": f"file_{name}",
        "key": f"students/j/{name}",
        "sha256": name,
        "size_bytes": 3,
        "filename": name,
    }


def _sweep() -> Artifacts:
    listed = [{"onnx": _art("c0.onnx")}, {"onnx": _art("c1.onnx")}]
    return Artifacts.of({"student": listed[1], "candidates": listed})  # candidate 1 chosen


def test_no_candidate_is_the_default_student_and_a_number_is_that_candidate() -> None:
    artifacts = _sweep()
    assert artifacts.find("onnx", None) == Artifact(**_art("c1.onnx"))
    assert artifacts.find("onnx", 0) == Artifact(**_art("c0.onnx"))
    assert artifacts.find("onnx", 2) is None
    assert artifacts.find("onnx", -1) is None
    assert artifacts.find("safetensors", 0) is None


def test_a_job_without_a_sweep_has_its_student_as_candidate_zero_only() -> None:
    artifacts = Artifacts.of({"student": {"onnx": _art("s.onnx")}})
    assert artifacts.find("onnx", 0) == Artifact(**_art("s.onnx"))
    assert artifacts.find("onnx", 1) is None


def test_every_file_is_listed_once_and_formats_are_the_students() -> None:
    artifacts = _sweep()
    assert sorted(a.key for a in artifacts.every()) == ["students/j/c0.onnx", "students/j/c1.onnx"]
    assert artifacts.formats() == ["onnx"]
    assert Artifacts.of(None).every() == [] and Artifacts.of({}).formats() == []


def test_rows_written_before_the_typed_shape_read_the_same() -> None:
    listed = [{"onnx": _art("c0.onnx")}, {"onnx": _art("c1.onnx")}]
    old = Artifacts.of({**listed[1], "candidates": listed})
    assert old == _sweep()
    assert Artifacts.of({"onnx": _art("s.onnx")}).find("onnx", 0) == Artifact(**_art("s.onnx"))


def test_a_malformed_row_is_refused_not_served() -> None:
    with pytest.raises(ValidationError):
        Artifacts.of({"student": {"onnx": {"key": "k"}}})
