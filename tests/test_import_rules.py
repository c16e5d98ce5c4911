"""The layers' import rules, checked on the source (not on what happens to be imported).

Every ``import`` and ``from … import`` of every module counts, those inside functions too: a
lazy import is still an edge of the house."""

from __future__ import annotations

import ast
import graphlib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The first-party packages, where their source lives: the client's in client/.
PACKAGES = {
    "api": ROOT / "api",
    "core": ROOT / "core",
    "migrations": ROOT / "migrations",
    "models": ROOT / "models",
    "stillhouse": ROOT / "client" / "stillhouse",
    "stillhouse_contracts": ROOT / "client" / "stillhouse_contracts",
    "stillhouse_server": ROOT / "stillhouse_server",
    "worker": ROOT / "worker",
    "engine": ROOT / "engine",
}
SERVER = {"api", "core", "engine", "migrations", "models", "stillhouse_server", "worker"}
# What the server installs and the client does not (the client's four are pydantic, typer,
# rich and httpx).
SERVER_LIBRARIES = {"sqlalchemy", "alembic", "celery", "kombu", "redis", "fastapi", "torch"}
CLIENT = {"stillhouse"}

RULES = {
    "api": {"engine", "worker", "torch"},
    # Routes speak HTTP and call the services, which own the reads and writes.
    "api/routes": {"models"},
    "core": {"api", "engine", "migrations", "models", "worker", *CLIENT, "torch", "celery"},
    "models": {"api", "engine", "migrations", "worker", *CLIENT, "torch", "celery"},
    "worker": {"api"},
    # The sandboxed engine: nothing of the host's side (its contracts with the host are core's).
    "engine": {"api", "models", "worker", "migrations", "stillhouse_server"}
    | {"sqlalchemy", "celery"},
    "stillhouse": SERVER | SERVER_LIBRARIES,
    "stillhouse_contracts": SERVER | CLIENT | SERVER_LIBRARIES,
}


@cache
def _imports(path: Path) -> frozenset[str]:
    """The top-level names a module imports (absolute imports; a relative one stays home)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return frozenset(names)


def _source(folder: str) -> Path:
    top, _, rest = folder.partition("/")
    return PACKAGES[top] / rest if rest else PACKAGES[top]


def _offenders(folder: str, forbidden: set[str]) -> dict[str, list[str]]:
    files = sorted(_source(folder).rglob("*.py"))
    assert files, f"no python files under {folder}"
    return {
        str(f.relative_to(ROOT)): sorted(_imports(f) & forbidden)
        for f in files
        if _imports(f) & forbidden
    }


@pytest.mark.parametrize("folder", sorted(RULES))
def test_folder_respects_import_rules(folder: str) -> None:
    assert _offenders(folder, RULES[folder]) == {}


def test_no_import_cycles_between_packages() -> None:
    """The packages form layers: core below models, models below api and worker."""
    graph = {
        name: {
            other
            for path in folder.rglob("*.py")
            for other in _imports(path) & PACKAGES.keys()
            if other != name
        }
        for name, folder in PACKAGES.items()
    }
    order = list(graph_order(graph))
    assert order.index("core") < order.index("models") < order.index("api")


def graph_order(graph: dict[str, set[str]]) -> tuple[str, ...]:
    try:
        return tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle between packages: {' -> '.join(err.args[1])}")


def test_api_app_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import api.app; "
        "bad = [m for m in ('torch', 'worker') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _module_imports(path: Path) -> frozenset[str]:
    """The full dotted names a module imports (``from a.b import c``: ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(names)


def test_the_engine_reads_no_settings_of_its_own() -> None:
    """The engine is configured by what the host puts in its request (``core.contracts``:
    ``EngineLimits``, the checkpoint cadences), never by ``core.settings`` (the sandbox's
    environment would be a second way in)."""
    offenders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "engine").rglob("*.py")
        if "core.settings" in _module_imports(path)
    )
    assert offenders == []
