"""``stillhouse jobs ...``: submit, follow (a bar with epoch, loss, agreement and time left),
cancel, report, metrics, download."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stillhouse.cli_common import (
    DEFAULT_URL,
    CliError,
    Ctx,
    Key,
    Output,
    OutputOpt,
    Quiet,
    Url,
    err_console,
    existing_file,
    out_console,
    print_json,
    print_object,
)
from stillhouse.cli_progress import follow_job
from stillhouse.cli_resources import All, Cursor, JobId, Limit, list_command
from stillhouse.models import Job, JobStatus, ModelMeasure, Report

jobs_app = typer.Typer(
    help="Jobs: submit, follow, cancel, read the report, download the student.",
    no_args_is_help=True,
)


def _body(
    teacher: list[str],
    dataset: str,
    eval_dataset: str | None,
    spec: Path | None,
    epochs: int | None,
    temperature: float | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if spec is not None:
        try:
            body = json.loads(existing_file(spec).read_text())
        except json.JSONDecodeError as exc:
            raise CliError(f"{spec} is not JSON: {exc}", "--spec takes a JSON job body") from exc
    body.update(teacher_ids=teacher, dataset_id=dataset)
    if eval_dataset:
        body["eval_dataset_id"] = eval_dataset
    if epochs is not None:
        body.setdefault("training", {})["epochs"] = epochs
    if temperature is not None:
        body.setdefault("distillation", {})["temperature"] = temperature
    return body


def finish(ctx: Ctx, job: Job) -> None:
    """Print the finished job (a short summary on a terminal, the whole Job with -o json);
    a job that did not succeed makes the command fail."""
    if ctx.quiet or ctx.as_json:
        print_object(ctx, job)
    else:
        print_summary(job)
    if job.status != "succeeded":
        reason = f": {job.error.code}: {job.error.message}" if job.error else ""
        raise CliError(f"job {job.id} {job.status}{reason}", code=1)


@jobs_app.command("submit")
def jobs_submit(
    teacher: Annotated[
        list[str], typer.Option(help="Teacher id (repeat for an ensemble).", show_default=False)
    ],
    dataset: Annotated[str, typer.Option(help="Transfer set id.", show_default=False)],
    eval_dataset: Annotated[
        str | None, typer.Option(help="Held-out set for the report (default: a split).")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="JSON file with more of the job body (any field).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="training.epochs")] = None,
    temperature: Annotated[float | None, typer.Option(help="distillation.temperature")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send again with the same key: the first job comes back.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end with a progress bar.")
    ] = False,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
) -> None:
    """Submit a distillation job and print it (or, with --wait, follow it and print the end)."""
    ctx = Ctx(url, key, output, quiet)
    body = _body(teacher, dataset, eval_dataset, spec, epochs, temperature)
    with ctx.client() as client:
        job = client.submit(body, idempotency_key=idempotency_key)
        if not wait:
            print_object(ctx, job)
            return
        job = follow_job(client, job.id, ctx.show_progress)
    finish(ctx, job)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs with this status.")] = None,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
    limit: Limit = 50,
    cursor: Cursor = None,
    every: All = False,
) -> None:
    """List jobs, newest first: one page, or every page with --all."""
    list_command(Ctx(url, key, output, quiet), "jobs", limit, cursor, every, status=status)


@jobs_app.command("show")
def jobs_show(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
) -> None:
    """Show a job: status, stage, progress, metrics, error, spec, report."""
    ctx = Ctx(url, key, output, quiet)
    with ctx.client() as client:
        print_object(ctx, client.job(job_id))


@jobs_app.command("wait")
def jobs_wait(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
) -> None:
    """Follow a job to its end (a bar: stage, epoch, loss, agreement, ETA), then print a
    summary (the whole job with -o json). Exits 1 unless it succeeded."""
    ctx = Ctx(url, key, output, quiet)
    with ctx.client() as client:
        job = follow_job(client, job_id, ctx.show_progress)
    finish(ctx, job)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
) -> None:
    """Ask a job to stop; it ends `cancelled` within seconds."""
    ctx = Ctx(url, key, output, quiet)
    with ctx.client() as client:
        print_object(ctx, client.cancel(job_id))


def print_summary(job: Job) -> None:
    """The ended job in a few rows: what it gave, and where the rest is."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in _summary_rows(job):
        table.add_row(name, Text(value))
    out_console().print(table)
    if job.report is not None:
        hint = f"full report: stillhouse jobs report {job.id}; whole job: -o json"
        err_console().print(Text(hint, style="dim"))


def _summary_rows(job: Job) -> list[tuple[str, str]]:
    rows = [("job", job.id), ("status", job.status)]
    if job.error is not None:
        rows.append(("error", f"{job.error.code}: {job.error.message}"))
    rows.append(("epochs", f"{job.epoch}/{job.epochs}"))
    if job.started_at and job.finished_at:
        rows.append(("took", f"{(job.finished_at - job.started_at).total_seconds():.1f} s"))
    loss = job.metrics.get("train_loss")
    if isinstance(loss, int | float):
        rows.append(("final loss", f"{loss:.4f}"))
    report = job.report
    if report is not None:
        ratio = report.compression_ratio
        accuracy = f"{_pct(report.student_accuracy)} (teacher {_pct(report.teacher_accuracy)})"
        rows += [
            ("agreement", _pct(report.agreement_top1)),
            ("accuracy", accuracy),
            ("compression", "unknown" if ratio is None else f"{ratio:.1f}x"),
            ("speedup", _speedup(report)),
        ]
    if job.student_formats:
        rows.append(("download", ", ".join(job.student_formats)))
    return rows


def _speedup(report: Report) -> str:
    """The speed-up, marked when a load on the worker's machine disturbed its timing."""
    spread = report.speedup_spread
    disturbed = spread is not None and spread.disturbed
    return f"{report.speedup:.2f}x" + (" (disturbed: the machine was busy)" if disturbed else "")


def _mb(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.2f} MB"


# A teacher from another tool may not say its parameters (hence its sizes).
REPORT_ROWS: tuple[tuple[str, Callable[[ModelMeasure], str]], ...] = (
    ("parameters", lambda m: "unknown" if m.parameters is None else f"{m.parameters:,}"),
    ("size fp32", lambda m: _mb(m.size_bytes_fp32)),
    ("size fp16", lambda m: _mb(m.size_bytes_fp16)),
    ("latency, batch 1", lambda m: f"{m.latency_ms_batch1:.3f} ms"),
    ("throughput", lambda m: f"{m.throughput_per_s:,.0f} /s"),
)


def print_report(ctx: Ctx, job_id: str, report: Report) -> None:
    if ctx.quiet:
        typer.echo(job_id)
        return
    if ctx.as_json:
        print_json(report)
        return
    table = Table("", "teacher", "student", box=None, header_style="bold")
    for label, show in REPORT_ROWS:
        table.add_row(label, show(report.teacher), show(report.student))
    table.add_row("accuracy", _pct(report.teacher_accuracy), _pct(report.student_accuracy))
    out_console().print(table)
    ratio = report.compression_ratio
    compression = "unknown" if ratio is None else f"{ratio:.1f}x"
    device = escape(report.device_name or report.device)
    out_console().print(
        f"compression {compression}  speedup {escape(_speedup(report))}\n"
        f"agreement {100 * report.agreement_top1:.2f}%  KL {report.kl_divergence:.4f}\n"
        f"{report.eval_samples} eval samples, {device}"
    )
    _print_sweep(report)


def _print_sweep(report: Report) -> None:
    """A sweep's candidates (the chosen one starred) and the hard-label baseline, if any."""
    if report.candidates:
        table = Table(
            "",
            "T",
            "alpha",
            "size ratio",
            "parameters",
            "latency",
            "agreement",
            "accuracy",
            box=None,
            header_style="bold",
        )
        for c in report.candidates:
            table.add_row(
                f"{c.index}{' *' if c.index == report.chosen else ''}",
                f"{c.temperature:g}",
                f"{c.alpha:g}",
                f"{c.size_ratio:g}",
                f"{c.parameters:,}",
                f"{c.latency_ms_batch1:.3f} ms",
                _pct(c.agreement_top1),
                _pct(c.student_accuracy),
            )
        out_console().print(table)
    gain = report.distillation_gain
    if report.baseline is not None and gain is not None:
        out_console().print(
            f"hard-label baseline: agreement {_pct(report.baseline.agreement_top1)}  "
            f"accuracy {_pct(report.baseline.student_accuracy)}; distillation bought "
            f"{_points(gain.agreement_top1)} agreement, "
            f"{_points(gain.student_accuracy)} accuracy"
        )


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f} points"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@jobs_app.command("report")
def jobs_report(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    key: Key = "",
    output: OutputOpt = Output.auto,
    quiet: Quiet = False,
) -> None:
    """Teacher against student: size, latency, throughput, accuracy, agreement, KL."""
    ctx = Ctx(url, key, output, quiet)
    with ctx.client() as client:
        print_report(ctx, job_id, client.report(job_id))


@jobs_app.command("download")
def jobs_download(
    job_id: JobId,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="onnx, onnx_fp16, onnx_int8, torch_export or safetensors.",
        ),
    ] = "onnx",
    out: Annotated[Path, typer.Option(help="A file, or a folder for the server's file name.")] = (
        Path(".")
    ),
    candidate: Annotated[
        int | None,
        typer.Option(min=0, help="A sweep's candidate (the report's index); default: chosen."),
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Download the student of a succeeded job; prints where it was written."""
    with Ctx(url, key).client() as client:
        typer.echo(str(client.download_student(job_id, format, out, candidate=candidate)))
