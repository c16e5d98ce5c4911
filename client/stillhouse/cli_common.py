"""What every client command of the CLI shares: its options, its output (JSON, a table, or
ids only) and its errors (one line and a hint, never a traceback unless ``--debug``)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from stillhouse._core import ApiError, RetryPolicy
from stillhouse.client import Client

DEFAULT_URL = "http://127.0.0.1:8000"
# A person is waiting: a server that is down is reported within about a second.
CLI_RETRY = RetryPolicy(attempts=3, backoff_s=0.3)


class Output(StrEnum):
    auto = "auto"
    json = "json"
    table = "table"


Url = Annotated[
    str,
    typer.Option("--url", envvar="STILLHOUSE_URL", help="Base URL of the API.", show_default=True),
]
Key = Annotated[
    str,
    typer.Option(
        "--key",
        envvar="STILLHOUSE_API_KEY",
        help="API key (Bearer). `make run` prints one.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        envvar="STILLHOUSE_OUTPUT",
        help="json, or table; auto: a table on a terminal, JSON when piped.",
    ),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print ids only (one a line), no progress: for scripts."),
]


class CliError(Exception):
    """A failure to report as one line, with a hint saying what to do about it."""

    def __init__(self, message: str, hint: str = "", code: int = 1) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


@dataclass
class Ctx:
    """One client command's connection and output choices."""

    url: str
    key: str
    output: Output = Output.auto
    quiet: bool = False

    def client(self) -> Client:
        if not self.key:
            raise CliError(
                "no API key",
                "set STILLHOUSE_API_KEY or pass --key (`make run` prints the dev key)",
                code=2,
            )
        return Client(self.url, self.key, retry=CLI_RETRY)

    @property
    def as_json(self) -> bool:
        if self.output is Output.auto:
            return not sys.stdout.isatty()
        return self.output is Output.json

    @property
    def show_progress(self) -> bool:
        return not self.quiet


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [plain(o) for o in obj]
    return obj


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(plain(obj), indent=2))


# A nested value longer than this is summarised in a table (the job's spec and report
# folded into ~90 lines at 80 columns): ``--json`` prints it whole.
MAX_CELL_JSON = 160


def _cell(value: Any) -> Text:
    """A value as plain text: user data is never read as rich markup (``[null,64]`` is a
    shape, not a style)."""
    if value is None:
        return Text("-")
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    if isinstance(value, dict | list):
        compact = json.dumps(value, separators=(",", ":"))
        if len(compact) <= MAX_CELL_JSON:
            return Text(compact)
        what = f"{len(value)} fields" if isinstance(value, dict) else f"{len(value)} items"
        return Text(f"{{{what}: --json shows them}}")
    return Text(str(value))


def print_object(ctx: Ctx, obj: Any) -> None:
    """One object: its id with -q, JSON, or a field/value table."""
    data = plain(obj)
    if ctx.quiet:
        typer.echo(data.get("id", "") if isinstance(data, dict) else data)
    elif ctx.as_json:
        print_json(data)
    else:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in data.items():
            table.add_row(name, _cell(value))
        out_console().print(table)


def print_rows(
    ctx: Ctx,
    items: list[Any],
    columns: dict[str, Any],
    next_cursor: str | None,
    drop_first: tuple[str, ...] = (),
) -> None:
    """A list: ids with -q, ``{"items", "next_cursor"}`` as JSON, or a table of ``columns``
    (header → function of the item's dict) that leaves out ``drop_first`` columns, in that
    order, while it is wider than the terminal."""
    rows = [plain(item) for item in items]
    if ctx.quiet:
        for row in rows:
            typer.echo(row["id"])
    elif ctx.as_json:
        print_json({"items": rows, "next_cursor": next_cursor})
    else:
        console = out_console()
        console.print(fitting_table(console, columns, rows, drop_first))
    if next_cursor and not ctx.quiet:
        err_console().print(f"more: --cursor {escape(next_cursor)}  (or --all)")


def fitting_table(
    console: Console, columns: dict[str, Any], rows: list[dict[str, Any]], drop: tuple[str, ...]
) -> Table:
    """A table whose first column (the id) is never cut, so it can be copied whole."""
    names = list(columns)
    while True:
        table = Table(box=None, header_style="bold")
        for i, name in enumerate(names):
            table.add_column(name, no_wrap=i == 0, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(columns[name](row)) for name in names))
        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        left = [name for name in drop if name in names]
        if width <= console.width or not left:
            return table
        names.remove(left[0])


def existing_file(path: Path) -> Path:
    if not path.exists():
        raise CliError(f"no such file: {path}", "check the path (relative to the current folder)")
    if not path.is_file():
        raise CliError(f"not a file: {path}", "give a file, not a folder")
    return path


_STATUS_HINTS = {
    401: "check STILLHOUSE_API_KEY (or --key); `stillhouse keys create --tenant NAME` on the "
    "server makes a key",
    403: "this key's scope does not allow it: use a key with the write or admin scope",
    404: "check the id (`stillhouse teachers|datasets|jobs list`)",
    409: "the object is in use or already finished",
    413: "the file is larger than the server accepts (STILLHOUSE_MAX_UPLOAD_BYTES)",
    415: "teachers: .pt2 (torch.export), ONNX or a ZIP of a Hugging Face model folder; "
    "datasets: npy, npz, csv, parquet, jsonl, zip of images",
    422: "fix the named field and try again",
    429: "over a quota or the rate limit: wait and try again",
}


def describe_api_error(exc: ApiError) -> CliError:
    message = f"{exc.status} {exc.title}: {exc.detail}".rstrip(": ")
    hint = _STATUS_HINTS.get(exc.status, "")
    if exc.status >= 500:
        hint = "the server failed: its log says why"
    return CliError(message, hint)


def describe_transport_error(exc: httpx.TransportError) -> CliError:
    try:
        url = str(exc.request.url.copy_with(query=None))
    except RuntimeError:  # an error raised before any request was made
        url = "the API"
    hint = "is the server running (`make run`)? set STILLHOUSE_URL or --url to where it listens"
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc).split("] ")[-1] or "connection failed"
        return CliError(f"cannot reach {url}: {reason}", hint)
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"{url} did not answer in time", "the server may be overloaded; try again")
    return CliError(f"connection to {url} failed: {type(exc).__name__}: {exc}", hint)


def friendly(exc: BaseException) -> CliError | None:
    """The one-line form of an error a user can do something about; None for a bug."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ApiError):
        return describe_api_error(exc)
    if isinstance(exc, httpx.TransportError):
        return describe_transport_error(exc)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return CliError(f"bad API URL: {exc}", "e.g. --url http://127.0.0.1:8000")
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return CliError(f"{exc.strerror}: {exc.filename}", "check the path")
    return None


def report_error(error: CliError) -> None:
    console = err_console()
    console.print(Text.assemble(("error: ", "bold red"), error.message))
    if error.hint:
        console.print(Text.assemble(("hint: ", "dim"), error.hint))
