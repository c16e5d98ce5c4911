"""The client commands: teachers, datasets and jobs over the REST API (the SDK underneath).

Each group is a ``typer.Typer`` that ``stillhouse.cli`` mounts; nothing here imports the
server's packages, so they work from a client-only install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stillhouse._core import UploadRejected
from stillhouse.cli_common import (
    DEFAULT_URL,
    CliError,
    Ctx,
    Key,
    Output,
    OutputOpt,
    Quiet,
    Url,
    existing_file,
    print_object,
    print_rows,
)
from stillhouse.cli_progress import spinner, upload_bar
from stillhouse.models import UploadKind

teachers_app = typer.Typer(help="Teachers: upload, list, show, delete.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets: upload, list, show, delete.", no_args_is_help=True)

Limit = Annotated[int, typer.Option(min=1, max=200, help="Items per page (the API's max: 200).")]
Cursor = Annotated[
    str | None, typer.Option(help="Start at this page (the `next_cursor` of the previous one).")
]
All = Annotated[bool, typer.Option("--all", help="Every item, fetching page after page.")]
Name = Annotated[str | None, typer.Option(help="A name to show in lists (default: the file's).")]
Wait = Annotated[
    bool, typer.Option(help="Wait until a worker has validated the upload, then print it.")
]
ObjectId = Annotated[str, typer.Argument(help="The id, as `list` prints it.", show_default=False)]
JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]

COLUMNS: dict[str, dict[str, Any]] = {
    "teachers": {
        "id": lambda r: r["id"],
        "name": lambda r: r["name"],
        "format": lambda r: r["format"],
        "status": lambda r: r["status"],
        "input": lambda r: r.get("input_shape"),
        "classes": lambda r: r.get("num_classes"),
        "parameters": lambda r: r.get("parameters"),
        "created": lambda r: r["created_at"][:19],
    },
    "datasets": {
        "id": lambda r: r["id"],
        "name": lambda r: r["name"],
        "format": lambda r: r["format"],
        "status": lambda r: r["status"],
        "samples": lambda r: r.get("num_samples"),
        "shape": lambda r: r.get("sample_shape"),
        "labels": lambda r: r.get("has_labels"),
        "created": lambda r: r["created_at"][:19],
    },
    "jobs": {
        "id": lambda r: r["id"],
        "status": lambda r: r["status"],
        "stage": lambda r: r.get("stage"),
        "progress": lambda r: f"{100 * (r.get('progress') or 0):.0f}%",
        "epoch": lambda r: f"{r.get('epoch', 0)}/{r.get('epochs', 0)}",
        "loss": lambda r: _job_value(r, "train_loss", "final_train_loss"),
        "agreement": lambda r: _percent(_job_value(r, "eval_agreement", "agreement_top1")),
        "created": lambda r: r["created_at"][:19],
    },
}


# Left out, in this order, while a table is wider than the terminal (80 columns keep the
# id, and for jobs the status, progress and agreement).
NARROW_DROP: dict[str, tuple[str, ...]] = {
    "teachers": ("created", "parameters", "format", "name"),
    "datasets": ("created", "format", "labels", "name"),
    "jobs": ("created", "stage", "epoch", "loss"),
}


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}%"


def _job_value(job: dict[str, Any], live: str, final: str) -> Any:
    """A running job's latest epoch value, else (once it has ended) its report's final one."""
    value = (job.get("metrics") or {}).get(live)
    return value if value is not None else (job.get("report") or {}).get(final)


def list_command(
    ctx: Ctx, kind: str, limit: int, cursor: str | None, every: bool, **filters: Any
) -> None:
    with ctx.client() as client:
        if every:
            items, nxt = list(client.iterate(kind, page_size=200, **filters)), None
        else:
            page = client.page(kind, limit=limit, cursor=cursor, **filters)
            items, nxt = page.items, page.next_cursor
    print_rows(ctx, items, COLUMNS[kind], nxt, NARROW_DROP[kind])


def upload_command(
    ctx: Ctx, kind: UploadKind, file: Path, name: str | None, wait: bool, **extra: Any
) -> None:
    file = existing_file(file)
    with ctx.client() as client:
        with upload_bar(file.name, ctx.show_progress) as progress:
            if kind == "teachers":
                obj: Any = client.upload_teacher(file, name, progress=progress, **extra)
            else:
                obj = client.upload_dataset(file, name, progress=progress)
        if wait:
            with spinner(f"validating {obj.id}", ctx.show_progress):
                obj = client.wait_ready(kind, obj.id, check=False)
    print_object(ctx, obj)
    if obj.status == "rejected":
        raise CliError(f"{kind[:-1]} {UploadRejected(obj)}", code=1)


def _crud(sub: typer.Typer, kind: str) -> None:
    @sub.command("list")
    def _list(
        url: Url = DEFAULT_URL,
        key: Key = "",
        output: OutputOpt = Output.auto,
        quiet: Quiet = False,
        limit: Limit = 50,
        cursor: Cursor = None,
        every: All = False,
    ) -> None:
        """List them, newest first: one page, or every page with --all."""
        list_command(Ctx(url, key, output, quiet), kind, limit, cursor, every)

    @sub.command("show")
    def _show(
        object_id: ObjectId,
        url: Url = DEFAULT_URL,
        key: Key = "",
        output: OutputOpt = Output.auto,
        quiet: Quiet = False,
    ) -> None:
        """Show one by id."""
        ctx = Ctx(url, key, output, quiet)
        with ctx.client() as client:
            print_object(ctx, client.get(kind, object_id))

    @sub.command("delete")
    def _delete(
        object_id: ObjectId, url: Url = DEFAULT_URL, key: Key = "", quiet: Quiet = False
    ) -> None:
        """Delete one by id."""
        with Ctx(url, key, quiet=quiet).client() as client:
            client.delete(kind, object_id)
        typer.echo(object_id if quiet else f"deleted {object_id}")


@teachers_app.command("upload")
def teachers_upload(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .pt2 (torch.export), an .onnx file or a zipped Hugging Face model folder."
        ),
    ],
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
    name: Name = None,
    wait: Wait = True,
    output_name: Annotated[
        str | None, typer.Option(help="The teacher's output to distil (default: auto).")
    ] = None,
    output_kind: Annotated[
        str | None, typer.Option(help="logits, probabilities or log_probabilities (default: auto).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="The teacher's Hugging Face tokenizer.json (text teachers)."),
    ] = None,
) -> None:
    """Upload a teacher (progress in bytes), wait for its validation, print it."""
    extra = {"output_name": output_name, "output_kind": output_kind, "tokenizer": tokenizer}
    upload_command(Ctx(url, key, output, quiet), "teachers", file, name, wait, **extra)


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[
        Path,
        typer.Argument(help="npy, npz, csv, parquet, jsonl (text), or a zip of images."),
    ],
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
    name: Name = None,
    wait: Wait = True,
) -> None:
    """Upload a transfer or eval set (progress in bytes), wait for its validation, print it."""
    upload_command(Ctx(url, key, output, quiet), "datasets", file, name, wait)


_crud(teachers_app, "teachers")
_crud(datasets_app, "datasets")
