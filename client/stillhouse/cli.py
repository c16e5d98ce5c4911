"""The ``stillhouse`` command: use the API from a shell, and run the service where it is
installed.

Client commands (teachers, datasets, jobs) live in their own modules and need only the
client. The server's commands (run, migrate, keys, sandbox-exec, demo-files) come from the
server's install, which registers them under the ``stillhouse.commands`` entry point group;
without it they answer with a hint. Errors print as one line and a hint; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
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


# Registered by the server's install (``stillhouse_server.cli``); listed here only to answer
# their names with a hint where the server is not installed.
SERVER_COMMANDS = ("run", "migrate", "keys", "sandbox-exec", "demo-files")


def _server_missing(name: str) -> None:
    @app.command(
        name,
        hidden=True,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def _missing() -> None:
        raise CliError(
            f"`stillhouse {name}` runs the server, which is not installed here "
            "(this is the client: SDK and CLI)",
            "install the server from a checkout: pip install ./client '.[api,worker]'",
        )


def _add_commands() -> None:
    """The server's commands where it is installed, hints for them where it is not."""
    plugins = entry_points(group="stillhouse.commands")
    for plugin in plugins:
        plugin.load()(app)
    if not plugins:
        for name in SERVER_COMMANDS:
            _server_missing(name)


_add_commands()


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
