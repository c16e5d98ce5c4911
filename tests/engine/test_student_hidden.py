"""student.hidden: explicit MLP widths instead of auto sizing (e.g. Hinton's 784-800-800-10)."""

from __future__ import annotations

import pydantic
import pytest

from core.spec import JobSpec, StudentSpec
from engine.errors import UserError
from engine.students import size_student
from engine.students.mlp import MLPConfig, mlp_parameters


def test_hidden_widths_are_used_as_given_whatever_the_target() -> None:
    name, config = size_student("mlp", (784,), 10, target=1000.0, cap=10**7, hidden=[800, 800])
    assert name == "mlp"
    assert config == MLPConfig((784,), 10, (800, 800))


def test_hidden_widths_over_the_cap_are_refused() -> None:
    cap = mlp_parameters(MLPConfig((784,), 10, (30, 30))) - 1
    with pytest.raises(UserError, match="student.hidden"):
        size_student("mlp", (784,), 10, target=100.0, cap=cap, hidden=[30, 30])


def test_hidden_is_only_valid_with_the_mlp_architecture() -> None:
    assert StudentSpec(architecture="mlp", hidden=[30, 30]).hidden == [30, 30]
    with pytest.raises(pydantic.ValidationError, match="hidden"):
        StudentSpec(architecture="auto", hidden=[30, 30])
    with pytest.raises(pydantic.ValidationError):
        StudentSpec(architecture="mlp", hidden=[0])


def test_a_spec_without_hidden_keeps_auto_sizing() -> None:
    spec = JobSpec(teacher_ids=["t"], dataset_id="d")
    assert spec.student.hidden is None
    name, config = size_student("mlp", (64,), 10, target=20000.0, cap=10**6)
    assert name == "mlp" and config.hidden != (800, 800)
