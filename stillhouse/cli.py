"""The ``stillhouse`` command: run the service, manage keys, and use the API from a shell."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stillhouse.client import ApiError, Client

app = typer.Typer(help="Stillhouse: knowledge distillation as a service.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
teachers_app = typer.Typer(help="Teachers: upload, list, show, delete.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets: upload, list, show, delete.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: submit, watch, cancel, download.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(teachers_app, name="teachers")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")

Url = Annotated[str, typer.Option(envvar="STILLHOUSE_URL", help="Base URL of the API")]
Key = Annotated[str, typer.Option(envvar="STILLHOUSE_API_KEY", help="API key")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


def _client(url: str, key: str) -> Client:
    if not key:
        typer.echo("set STILLHOUSE_API_KEY or pass --key", err=True)
        raise typer.Exit(2)
    return Client(url, key)


@app.command()
def run() -> None:
    """Migrate, then serve the API with its workers (embedded default: SQLite, no servers)."""
    from core.settings import get_settings
    from stillhouse.supervisor import Supervisor, banner, prepare, processes

    settings = get_settings()
    key = prepare(settings)
    typer.echo(banner(settings, key))
    raise typer.Exit(Supervisor(processes(settings)).run())


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    from core.migrate import upgrade

    upgrade()
    typer.echo("database is at the newest migration")


@app.command(
    "sandbox-exec", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
def sandbox_exec(
    command: Annotated[list[str], typer.Argument(help="CMD [ARGS...], after --")],
    memory_bytes: Annotated[
        int, typer.Option(help="address-space limit; 0: a job's (STILLHOUSE_SANDBOX_MEMORY_BYTES)")
    ] = 0,
) -> None:
    """Run CMD in the sandbox that jobs and upload validation run in; exit with its status.

    A fresh job folder is its only writable place (its working directory, /job); no network,
    no other process, none of the data directory. Example: stillhouse sandbox-exec -- id
    """
    from core.settings import get_settings
    from worker.sandbox import SandboxError, job_memory_bytes, run_command

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
def keys_create(tenant: Annotated[str, typer.Option(help="tenant name")]) -> None:
    """Create an API key for TENANT (made if missing). The key is printed once."""
    from core.db import session_scope
    from core.keys import create_key

    with session_scope() as session:
        key = create_key(session, tenant_name=tenant)
    typer.echo(key)


@app.command("demo-files")
def demo_files(directory: Path) -> None:
    """Write a sample teacher (.pt2 and .onnx) and datasets, trained in seconds on digits."""
    from worker.demo import write_demo_files

    for path in write_demo_files(directory):
        typer.echo(str(path))


def _upload(kind: str, file: Path, name: str | None, wait: bool, url: str, key: str) -> None:
    with _client(url, key) as client:
        obj = (
            client.upload_teacher(file, name)
            if kind == "teachers"
            else client.upload_dataset(file, name)
        )
        if wait:
            obj = client.wait_ready(kind, obj["id"])
    _print(obj)


@teachers_app.command("upload")
def teachers_upload(
    file: Path, url: Url = DEFAULT_URL, key: Key = "", name: str | None = None, wait: bool = True
) -> None:
    _upload("teachers", file, name, wait, url, key)


@datasets_app.command("upload")
def datasets_upload(
    file: Path, url: Url = DEFAULT_URL, key: Key = "", name: str | None = None, wait: bool = True
) -> None:
    _upload("datasets", file, name, wait, url, key)


def _collection_commands(sub: typer.Typer, collection: str) -> None:
    @sub.command("list")
    def _list(url: Url = DEFAULT_URL, key: Key = "", limit: int = 50) -> None:
        with _client(url, key) as client:
            _print(client.list(collection, limit=limit))

    @sub.command("show")
    def _show(object_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
        with _client(url, key) as client:
            _print(client._call("GET", f"/v1/{collection}/{object_id}").json())

    @sub.command("delete")
    def _delete(object_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
        with _client(url, key) as client:
            client.delete(collection, object_id)


_collection_commands(teachers_app, "teachers")
_collection_commands(datasets_app, "datasets")
_collection_commands(jobs_app, "jobs")


@jobs_app.command("submit")
def jobs_submit(
    teacher: Annotated[list[str], typer.Option(help="teacher id (repeat for an ensemble)")],
    dataset: Annotated[str, typer.Option(help="transfer set id")],
    url: Url = DEFAULT_URL,
    key: Key = "",
    eval_dataset: str | None = None,
    spec: Annotated[Path | None, typer.Option(help="JSON file with more of the job body")] = None,
    epochs: int | None = None,
    temperature: float | None = None,
    wait: bool = False,
) -> None:
    """Submit a distillation job."""
    body: dict[str, Any] = json.loads(spec.read_text()) if spec else {}
    body.update(teacher_ids=teacher, dataset_id=dataset)
    if eval_dataset:
        body["eval_dataset_id"] = eval_dataset
    if epochs is not None:
        body.setdefault("training", {})["epochs"] = epochs
    if temperature is not None:
        body.setdefault("distillation", {})["temperature"] = temperature
    with _client(url, key) as client:
        job = client.submit(body)
        if wait:
            job = client.wait(job["id"])
    _print(job)


@jobs_app.command("wait")
def jobs_wait(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    """Follow a job's events until it ends, then print it."""
    with _client(url, key) as client:
        for event in client.events(job_id):
            data = event["data"]
            if event.get("event") == "progress":
                typer.echo(
                    f"{data.get('status')} {data.get('stage') or ''} "
                    f"{100 * float(data.get('progress') or 0):.0f}% epoch {data.get('epoch')}",
                    err=True,
                )
        _print(client.job(job_id))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    with _client(url, key) as client:
        _print(client.cancel(job_id))


@jobs_app.command("report")
def jobs_report(job_id: str, url: Url = DEFAULT_URL, key: Key = "") -> None:
    with _client(url, key) as client:
        _print(client.report(job_id))


@jobs_app.command("download")
def jobs_download(
    job_id: str,
    url: Url = DEFAULT_URL,
    key: Key = "",
    format: str = "onnx",
    out: Path = Path("."),
) -> None:
    """Download the student in FORMAT (torch_export, onnx, safetensors)."""
    with _client(url, key) as client:
        typer.echo(str(client.download_student(job_id, format, out)))


def main() -> None:
    try:
        app()
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
