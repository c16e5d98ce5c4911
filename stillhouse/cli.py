"""The ``stillhouse`` command: run the service, manage keys, and use the API from a shell.

Client commands (teachers, datasets, jobs) live in their own modules and need only the
client install. Server commands import the server's packages when they run, and say which
extra to install when those are missing. Errors print as one line and a hint; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli_common import CliError, friendly, report_error
from stillhouse.cli_jobs import jobs_app
from stillhouse.cli_resources import datasets_app, teachers_app

app = typer.Typer(
    help="Stillhouse: knowledge distillation as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks only with --debug, never with locals (keys)
)
keys_app = typer.Typer(help="API keys (on the server: needs its database).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(teachers_app, name="teachers")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, show the full traceback.")
    ] = False,
) -> None:
    """Stillhouse: knowledge distillation as a service.

    The client commands read STILLHOUSE_URL and STILLHOUSE_API_KEY (or --url and --key).
    """


@contextmanager
def server_packages(command: str, extra: str = "server") -> Iterator[None]:
    """Imports of the server's packages inside: a client-only install gets a hint."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise CliError(
            f"`stillhouse {command}` runs the server, whose packages are not installed "
            f"(no module {exc.name!r})",
            f"pip install 'stillhouse[{extra}]' (from a checkout: pip install -e '.[{extra}]')",
        ) from exc


@app.command()
def run() -> None:
    """Migrate, then serve the API with its workers (embedded default: SQLite, no servers)."""
    with server_packages("run", "api,worker"):
        from core.settings import get_settings
        from stillhouse.supervisor import Supervisor, banner, prepare, processes

        settings = get_settings()
        key = prepare(settings)
    typer.echo(banner(settings, key))
    raise typer.Exit(Supervisor(processes(settings), settings.log_format).run())


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    with server_packages("migrate"):
        from migrations import upgrade

        upgrade()
    typer.echo("database is at the newest migration")


@app.command(
    "sandbox-exec", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
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
        from stillhouse.server_keys import create_key_for

        key = create_key_for(tenant)
    typer.echo(key)


@app.command("demo-files")
def demo_files(
    directory: Annotated[Path, typer.Argument(help="Folder to write them to (made if missing).")],
) -> None:
    """Write a sample teacher (.pt2 and .onnx) and datasets, trained in seconds on digits."""
    with server_packages("demo-files", "worker"):
        from worker.demo import write_demo_files

        paths = write_demo_files(directory)
    for path in paths:
        typer.echo(str(path))


def _debug_requested(argv: list[str]) -> bool:
    own = argv[: argv.index("--")] if "--" in argv else argv
    return "--debug" in own or os.environ.get("STILLHOUSE_DEBUG", "") not in ("", "0")


def main() -> None:
    debug = _debug_requested(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        error = friendly(exc) or CliError(
            f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for the traceback"
        )
        report_error(error)
        sys.exit(error.code)


if __name__ == "__main__":
    main()
