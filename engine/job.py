"""The ``distill`` operation of the sandboxed child: one job's engine run, events as contracts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, TypeAdapter

from core.contracts import (
    CheckpointEvent,
    DistillRequest,
    EpochEvent,
    Outcome,
    ProgressEvent,
    ResumedEvent,
    SoftLabelsEvent,
    StoppedEvent,
    StopReason,
)
from engine.errors import Stopped

History = EpochEvent | CheckpointEvent | ResumedEvent | SoftLabelsEvent
# The engine's history events ({"event": "epoch" | "checkpoint" | "resumed" | "soft_labels"}).
_HISTORY: TypeAdapter[History] = TypeAdapter(Annotated[History, Field(discriminator="event")])


def stop_reason(stop_file: Path) -> StopReason:
    """What the worker wrote in the stop file; a file it could not finish writing was a
    shutdown's (the worker was going away), never a cancel's."""
    try:
        reason = stop_file.read_bytes().strip()
    except OSError:
        return "shutdown"
    return "cancel" if reason == b"cancel" else "shutdown"


def run_from_request(
    request: DistillRequest, *, emit: Callable[[BaseModel], None], preloaded: bool = False
) -> Outcome | StoppedEvent:
    from engine.engine import run_distillation

    stop_file = Path(request.stop_file)
    try:
        result = run_distillation(
            request.teachers,
            request.transfer,
            request.eval,
            request.spec,
            workdir=Path(request.workdir),
            cache_dir=Path(request.cache_dir),
            on_progress=lambda event: emit(ProgressEvent.model_validate(event)),
            on_event=lambda event: emit(_HISTORY.validate_python(event)),
            should_stop=stop_file.exists,
            device=request.device,
            checkpoint_every=request.checkpoint_every,
            checkpoint_every_seconds=request.checkpoint_every_seconds,
            allow_torchscript=request.allow_torchscript,
            tokenizer=request.tokenizer,
            limits=request.limits,
        )
    except Stopped:
        return StoppedEvent(reason=stop_reason(stop_file))
    # Whether this ran in a spare child started ahead of the job (imports already done).
    sandbox = {"sandbox": {"preloaded": preloaded}}
    return result.model_copy(update={"report": result.report.model_copy(update=sandbox)})
