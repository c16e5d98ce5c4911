"""The layers' import rules, checked on the source (not on what happens to be imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES = {
    "api": {"worker", "torch"},
    "models": {"api", "worker", "torch", "celery"},
    "core": {"api", "worker", "torch", "celery"},
    "worker/distill": {"models", "sqlalchemy", "celery", "api"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_folder_respects_import_rules(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no python files under {folder}"
    offenders = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & RULES[folder])
        for f in files
        if _imports(f) & RULES[folder]
    }
    assert offenders == {}


def test_api_app_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import api.app; "
        "bad = [m for m in ('torch', 'worker') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
