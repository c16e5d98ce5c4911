"""A finished job's student files: the default student, a sweep's candidates, each once."""

from __future__ import annotations

from typing import Any

from core.artifacts import every_artifact, student_artifact, student_formats


def _art(name: str) -> dict[str, Any]:
    return {"file_id": f"file_{name}", "key": f"students/j/{name}", "sha256": name}


def _sweep() -> dict[str, Any]:
    listed = [{"onnx": _art("c0.onnx")}, {"onnx": _art("c1.onnx")}]
    return {**listed[1], "candidates": listed}  # candidate 1 chosen


def test_no_candidate_is_the_default_student_and_a_number_is_that_candidate() -> None:
    artifacts = _sweep()
    assert student_artifact(artifacts, "onnx", None) == _art("c1.onnx")
    assert student_artifact(artifacts, "onnx", 0) == _art("c0.onnx")
    assert student_artifact(artifacts, "onnx", 2) is None
    assert student_artifact(artifacts, "safetensors", 0) is None


def test_a_job_without_a_sweep_has_one_candidate_its_student() -> None:
    artifacts = {"onnx": _art("s.onnx")}
    assert student_artifact(artifacts, "onnx", 0) == _art("s.onnx")
    assert student_artifact(artifacts, "onnx", 1) is None
    assert student_artifact(None, "onnx", None) is None


def test_the_chosen_file_is_listed_once_and_candidates_is_not_a_format() -> None:
    artifacts = _sweep()
    assert sorted(a["key"] for a in every_artifact(artifacts)) == [
        "students/j/c0.onnx",
        "students/j/c1.onnx",
    ]
    assert student_formats(artifacts) == ["onnx"]
    assert student_artifact(artifacts, "candidates", None) is None
