"""The client installs alone: `pip install ./client` puts the SDK, the CLI and the contracts
it shares with the service in site-packages, with its four dependencies, and nothing of the
server (no api, core, models, worker; no database, broker or torch). Installed for real into
a fresh venv, from a copy of client/ as a release would hold it, and used against a live API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEV_KEY, ROOT

CLIENT_PACKAGES = {"stillhouse", "stillhouse_contracts"}
SERVER_PACKAGES = {"api", "core", "migrations", "models", "worker", "stillhouse_server"}
SERVER_ONLY = {"celery", "sqlalchemy", "alembic", "psycopg", "kombu", "redis", "torch", "fastapi"}

# Run in the client's venv: each distribution with its top-level names, and the ones the
# client needs (its requirements, followed through).
INVENTORY = """
import json, re
from importlib import metadata

def name(text):
    return re.split(r"[ ;<>=!~\\[(]", text.strip(), maxsplit=1)[0].lower().replace("_", "-")

dists = {name(d.metadata["Name"]): d for d in metadata.distributions()}
tops = {
    n: sorted({f.parts[0] for f in (d.files or []) if len(f.parts) > 1 and f.suffix == ".py"})
    for n, d in dists.items()
}
needed, todo = set(), ["stillhouse"]
while todo:
    n = todo.pop()
    if n in needed or n not in dists:
        continue
    needed.add(n)
    todo += [name(r) for r in dists[n].requires or [] if "extra ==" not in r]
print(json.dumps({"tops": tops, "needed": sorted(needed)}))
"""


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def _env(**extra: str) -> dict[str, str]:
    """Nothing of the checkout on the path: only what the venv holds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STILLHOUSE_", "PYTHON"))}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", **extra}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("client-install")
    source = tmp / "client"
    shutil.copytree(
        ROOT / "client",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"),
    )
    venv.create(tmp / "venv", with_pip=True)
    py = tmp / "venv" / "bin" / "python"
    installed = _run(str(py), "-m", "pip", "install", "-q", str(source), cwd=tmp, env=_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield tmp / "venv"


@pytest.mark.slow
def test_site_packages_holds_the_client_and_its_dependencies_only(client_venv: Path) -> None:
    py = str(client_venv / "bin" / "python")
    out = _run(py, "-c", INVENTORY, cwd=client_venv, env=_env())
    assert out.returncode == 0, out.stderr
    inventory = json.loads(out.stdout)
    tops, needed = inventory["tops"], set(inventory["needed"])

    assert set(tops["stillhouse"]) == CLIENT_PACKAGES
    assert {"httpx", "typer", "rich", "pydantic"} <= needed
    assert set(tops) - needed <= {"pip", "setuptools"}  # what venv itself brings
    everything = {top for names in tops.values() for top in names}
    assert everything & SERVER_PACKAGES == set()
    assert set(tops) & SERVER_ONLY == set()


@pytest.mark.slow
def test_the_client_imports_without_the_server(client_venv: Path) -> None:
    code = (
        "import sys, stillhouse, stillhouse.cli; stillhouse.Client; stillhouse.AsyncClient; "
        "from stillhouse.models import JobSpec; JobSpec(teacher_ids=['tch_x'], dataset_id='ds_x'); "
        f"bad = sorted(set({sorted(SERVER_PACKAGES | SERVER_ONLY)!r}) & set(sys.modules)); "
        "assert not bad, bad"
    )
    out = _run(str(client_venv / "bin" / "python"), "-c", code, cwd=client_venv, env=_env())
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_the_cli_helps_and_names_the_missing_server(client_venv: Path) -> None:
    cli = str(client_venv / "bin" / "stillhouse")
    helped = _run(cli, "--help", cwd=client_venv, env=_env())
    assert helped.returncode == 0, helped.stderr
    assert {"teachers", "datasets", "jobs"} <= set(helped.stdout.split())
    assert _run(cli, "jobs", "--help", cwd=client_venv, env=_env()).returncode == 0
    for args in (("run",), ("keys", "create", "--tenant", "t"), ("migrate",)):
        out = _run(cli, *args, cwd=client_venv, env=_env())
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "the server, which is not installed here" in out.stderr
        assert "pip install ./client '.[api,worker]'" in out.stderr


@pytest.mark.slow
def test_the_installed_client_talks_to_a_live_api(client_venv: Path, api_url: str) -> None:
    code = (
        "import os, stillhouse\n"
        "url, key = os.environ['STILLHOUSE_URL'], os.environ['STILLHOUSE_API_KEY']\n"
        "with stillhouse.Client(url, key) as c:\n"
        "    print(','.join(s.name for s in c.students()))\n"
        "    try:\n"
        "        c.job('job_missing')\n"
        "    except stillhouse.ApiError as exc:\n"
        "        print(exc.status)\n"
    )
    env = _env(STILLHOUSE_URL=api_url, STILLHOUSE_API_KEY=DEV_KEY)
    out = _run(str(client_venv / "bin" / "python"), "-c", code, cwd=client_venv, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "auto,mlp,cnn,cnn1d,resnet,mobilenetv2,text_cnn,transformer,gpt",
        "404",
    ]
    listed = _run(str(client_venv / "bin" / "stillhouse"), "jobs", "list", cwd=client_venv, env=env)
    assert listed.returncode == 0, listed.stderr


def test_the_distributions_split_client_and_server() -> None:
    import tomllib

    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("[")[0] for dep in client["dependencies"]}
    assert client["name"] == "stillhouse" and base == {"pydantic", "typer", "rich", "httpx"}
    assert client["scripts"] == {"stillhouse": "stillhouse.cli:main"}

    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert server["name"] == "stillhouse-server"
    assert [dep.split("=")[0] for dep in server["dependencies"]] == ["stillhouse"]
    extras = server["optional-dependencies"]
    assert "stillhouse-server[server]" in extras["api"]
    assert "stillhouse-server[server]" in extras["worker"]
    assert any(dep.startswith("celery") for dep in extras["server"])
    assert "scripts" not in server  # the command is the client's; the server adds to it
    assert sys.version_info >= (3, 11)


def test_the_server_install_adds_its_commands_to_the_same_cli() -> None:
    import typer

    from stillhouse.cli import SERVER_COMMANDS, app

    commands = typer.main.get_command(app).commands
    assert set(SERVER_COMMANDS) <= set(commands)
    assert not any(commands[name].hidden for name in SERVER_COMMANDS)  # the real ones, no hints
    assert "create" in commands["keys"].commands
