"""The error-code catalogue is complete, and code names error codes with ``ErrorCode``."""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from core.errors import CATALOGUE, ErrorCode, is_disk_full, problem_codes

ROOT = Path(__file__).resolve().parents[2]
# Calls whose first argument (or ``code=``) is an error code users see.
CODE_CALLS = {"UserError", "SandboxError", "fail", "_fail"}


def test_every_code_has_a_complete_catalogue_entry() -> None:
    assert set(CATALOGUE) == set(ErrorCode)
    for code, item in CATALOGUE.items():
        assert item.title and item.meaning.endswith(".") and item.action.endswith("."), code
        assert item.status is None or 400 <= item.status < 600, code


def test_problem_codes_have_distinct_statuses() -> None:
    statuses = [CATALOGUE[code].status for code in problem_codes()]
    assert len(statuses) == len(set(statuses))
    assert {400, 401, 404, 409, 413, 415, 422, 429, 503, 507} <= set(statuses)


def _bare_codes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name not in CODE_CALLS:
            continue
        args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "code"]
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {a.value!r}"
            for a in args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "code"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {value.value!r}")
    return found


@pytest.mark.parametrize("folder", ["api", "core", "models", "worker"])
def test_no_bare_error_code_strings(folder: str) -> None:
    bare = [hit for path in sorted((ROOT / folder).rglob("*.py")) for hit in _bare_codes(path)]
    assert bare == []


def test_disk_full_is_recognised_through_the_cause_chain() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)  # answers every write with a real ENOSPC
    try:
        with pytest.raises(OSError) as caught:
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC
    assert is_disk_full(caught.value)
    try:
        raise RuntimeError("export failed") from caught.value
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(ValueError("no"))
