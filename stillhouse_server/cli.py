"""The server's commands of ``stillhouse``: run the service, migrate, manage keys, the
sandbox and the demo files. The server's install registers ``register`` under the
``stillhouse.commands`` entry point group; the client's CLI calls it with its Typer app.

Each command imports the server's packages when it runs, and says which extra to install
when those are missing (the API image has no torch, so no ``sandbox-exec`` there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli_common import CliError

keys_app = typer.Typer(help="API keys (on the server: needs its database).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(migrate)
    app.command(
        "sandbox-exec", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
    )(sandbox_exec)
    app.add_typer(keys_app, name="keys")
    app.command("demo-files")(demo_files)


@contextmanager
def server_packages(command: str, extra: str = "server") -> Iterator[None]:
    """Imports of the server's packages inside: an install without that extra gets a hint."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise CliError(
            f"`stillhouse {command}` runs the server, whose packages are not installed "
            f"(no module {exc.name!r})",
            f"from a checkout: pip install ./client '.[{extra}]'",
        ) from exc


def run() -> None:
    """Migrate, then serve the API with its workers (embedded default: SQLite, no servers)."""
    with server_packages("run", "api,worker"):
        from core.settings import get_settings
        from stillhouse_server.supervisor import (
            Supervisor,
            banner,
            port_taken,
            prepare,
            processes,
        )

        settings = get_settings()
        if port_taken(settings.host, settings.port):
            typer.echo(
                f"stillhouse run: {settings.host}:{settings.port} is in use (another "
                f"`stillhouse run`?). Stop it, or serve on another port: "
                f"STILLHOUSE_PORT={settings.port + 1} make run",
                err=True,
            )
            raise typer.Exit(1)
        key = prepare(settings)
    typer.echo(banner(settings, key))
    supervisor = Supervisor(processes(settings), settings.log_format, banner(settings, key, True))
    raise typer.Exit(supervisor.run())


def migrate() -> None:
    """Bring the database schema to the newest migration."""
    with server_packages("migrate"):
        from migrations import upgrade

        upgrade()
    typer.echo("database is at the newest migration")


def sandbox_exec(
    command: Annotated[list[str], typer.Argument(help="CMD [ARGS...], after --")],
    memory_bytes: Annotated[
        int,
        typer.Option(help="Allocated-memory limit; 0: a job's (STILLHOUSE_SANDBOX_MEMORY_BYTES)."),
    ] = 0,
) -> None:
    """Run CMD in the sandbox that jobs and upload validation run in; exit with its status.

    A fresh job folder is its only writable place (its working directory, /job); no network,
    no other process, none of the data directory; the same user, limits and environment as
    a job's engine. Exit status 125: no sandbox can be made here.
    Example: stillhouse sandbox-exec -- id
    """
    with server_packages("sandbox-exec", "worker"):
        from core.settings import get_settings
        from worker.bwrap import job_memory_bytes
        from worker.sandbox import SandboxError, run_command

        settings = get_settings()
        try:
            status = run_command(
                command, settings=settings, memory_bytes=memory_bytes or job_memory_bytes(settings)
            )
        except SandboxError as exc:
            typer.echo(f"sandbox-exec: {exc.message}", err=True)
            raise typer.Exit(125) from exc
    raise typer.Exit(status)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (made if missing).", show_default=False)],
) -> None:
    """Create an API key for TENANT and print it (once: it is stored hashed).

    Runs against the server's database: use the server's STILLHOUSE_DATA_DIR (or
    STILLHOUSE_DATABASE_URL).
    """
    with server_packages("keys create"):
        from stillhouse_server.keys import create_key_for

        key = create_key_for(tenant)
    typer.echo(key)


def demo_files(
    directory: Annotated[Path, typer.Argument(help="Folder to write them to (made if missing).")],
) -> None:
    """Write a sample teacher (.pt2 and .onnx) and datasets, trained in seconds on digits."""
    with server_packages("demo-files", "worker"):
        from worker.demo import write_demo_files

        paths = write_demo_files(directory)
    for path in paths:
        typer.echo(str(path))
