"""`pip install stillhouse` with no extra is the client: the SDK and the CLI, without the
server's packages (database, broker, torch). Installed for real into a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVER_ONLY = {"celery", "sqlalchemy", "alembic", "psycopg", "kombu", "redis", "torch", "fastapi"}
PACKAGES = ("api", "core", "migrations", "models", "stillhouse", "worker")


def _source_copy(dest: Path) -> Path:
    """The files a release would hold (no .venv, no build leftovers in the checkout)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    return dest


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_client_install_has_no_server_packages(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    venv.create(tmp_path / "venv", with_pip=True)
    py = str(tmp_path / "venv" / "bin" / "python")
    installed = _run(py, "-m", "pip", "install", "-q", str(source), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]

    names = _run(py, "-m", "pip", "list", "--format=freeze", cwd=tmp_path).stdout
    present = {line.split("==")[0].lower().replace("_", "-") for line in names.split()}
    assert present & SERVER_ONLY == set()
    assert {"httpx", "typer", "rich", "pydantic"} <= present

    code = "import sys, stillhouse; stillhouse.Client; stillhouse.AsyncClient; "
    code += "assert not {'celery', 'sqlalchemy'} & set(sys.modules)"
    assert _run(py, "-c", code, cwd=tmp_path).returncode == 0

    cli = str(tmp_path / "venv" / "bin" / "stillhouse")
    assert _run(cli, "jobs", "--help", cwd=tmp_path).returncode == 0
    keys = _run(cli, "keys", "create", "--tenant", "t", cwd=tmp_path)
    assert keys.returncode == 1 and "Traceback" not in keys.stderr
    assert "pip install 'stillhouse[server]'" in keys.stderr
    run = _run(cli, "run", cwd=tmp_path)
    assert run.returncode == 1 and "stillhouse[api,worker]" in run.stderr


def test_the_extras_carry_the_server() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("[")[0] for dep in project["dependencies"]}
    assert base == {"pydantic", "typer", "rich", "httpx"}
    extras = project["optional-dependencies"]
    assert "stillhouse[server]" in extras["api"] and "stillhouse[server]" in extras["worker"]
    assert any(dep.startswith("celery") for dep in extras["server"])
    assert sys.version_info >= (3, 11)
