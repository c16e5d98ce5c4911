"""Students: what the user gets back. Built from the registry by name and config."""

from engine.students.registry import (
    REGISTRY,
    StudentEntry,
    TokenShape,
    build_student,
    config_from_dict,
    config_to_dict,
    count_parameters,
    floored_target,
    init_student,
    size_student,
    student_from_json,
    student_target,
)

__all__ = [
    "REGISTRY",
    "StudentEntry",
    "TokenShape",
    "build_student",
    "config_from_dict",
    "config_to_dict",
    "count_parameters",
    "floored_target",
    "init_student",
    "size_student",
    "student_from_json",
    "student_target",
]
