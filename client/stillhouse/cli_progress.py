"""Progress bars on stderr (stdout stays for the result): bytes of an upload, and a job's
stage, epoch, loss, agreement and time left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from stillhouse._core import ProgressCallback
from stillhouse.cli_common import err_console
from stillhouse.client import Client
from stillhouse.models import Job, JobEvent


@contextmanager
def upload_bar(label: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A bytes bar for one upload; yields the SDK's progress callback (None when disabled)."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
    )
    task = progress.add_task(f"upload {escape(label)}", total=None)

    def update(sent: int, total: int) -> None:
        progress.update(task, completed=sent, total=total)

    with progress:
        yield update


@contextmanager
def spinner(label: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as progress:
        progress.add_task(label, total=None)
        yield


# Below this many columns the job's bar line drops its labels (``agreement`` becomes
# ``agr``, the ETA its word) and keeps a bar of BAR_NARROW cells: an 80-column terminal
# still shows a readable bar.
WIDE = 100
BAR_NARROW = 16


def _fields(data: dict[str, Any], narrow: bool = False) -> dict[str, Any]:
    """The bar's fields this event knows; the others keep their last value (step events
    carry the loss only, epoch events the agreement too, the final one the report)."""
    metrics = data.get("metrics") or {}
    report = data.get("report") or {}
    loss = metrics.get("train_loss")
    agreement = metrics.get("eval_agreement", report.get("agreement_top1"))
    epochs = data.get("epochs") or 0
    fields = {
        "epoch": f"{'ep' if narrow else 'epoch'} {data.get('epoch') or 0}/{epochs}"
        if epochs
        else "",
        "loss": f"loss {loss:.{3 if narrow else 4}f}" if isinstance(loss, int | float) else "",
        "agreement": f"{'agr' if narrow else 'agreement'} {100 * agreement:.1f}%"
        if isinstance(agreement, int | float)
        else "",
    }
    return {name: value for name, value in fields.items() if value}


def _describe(data: dict[str, Any], narrow: bool = False) -> str:
    stage = data.get("stage")
    if narrow:
        return str(stage or data.get("status"))
    return f"{data.get('status')} {stage}" if stage else str(data.get("status"))


def job_bar(console: Console | None = None) -> Progress:
    """The job's bar on stderr: stage, bar, percent, epoch, loss, agreement, time left."""
    console = console or err_console()
    if console.width < WIDE:
        return Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=BAR_NARROW),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[epoch]}"),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[agreement]}"),
            TimeRemainingColumn(),
            console=console,
        )
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[epoch]}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[agreement]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def follow_job(client: Client, job_id: str, enabled: bool) -> Job:
    """Follow a job's events to its end (a bar when ``enabled``) and return the final Job."""
    if not enabled:
        for event in client.events(job_id):
            if event.final:
                return event.job()
        return client.job(job_id)
    with job_bar() as progress:
        task = progress.add_task(job_id, total=1.0, epoch="", loss="", agreement="")
        for event in client.events(job_id):
            show(progress, task, event)
            if event.final:
                return event.job()
    return client.job(job_id)


def show(progress: Progress, task: TaskID, event: JobEvent) -> None:
    """One event on the bar."""
    data = event.data
    narrow = progress.console.width < WIDE
    done = 1.0 if event.final and data.get("status") == "succeeded" else data.get("progress")
    progress.update(
        task,
        completed=float(done or 0.0),
        description=_describe(data, narrow),
        **_fields(data, narrow),
    )
