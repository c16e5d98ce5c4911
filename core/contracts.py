"""What crosses a process boundary, as pydantic contracts (no torch here).

API → worker → sandboxed engine child: the worker sends the child one ``ChildRequest`` on
stdin; the child answers with ``ChildEvent`` JSON lines on its own channel (progress,
finished epochs, checkpoints, then exactly one outcome or error). One side writes them with
``model_dump_json``, the other validates them with ``parse_event``: a line that is not one
of these events is a protocol error, never a ``KeyError`` later. The ``Report`` (in
``stillhouse_contracts``, shipped with the client) is also the API's response model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.enums import ExportFormat, Stage
from core.errors import ErrorCode
from core.spec import JobSpec

# The report is the API's answer too, so it ships with the client (``stillhouse_contracts``).
from stillhouse_contracts.report import (
    Baseline as Baseline,
)
from stillhouse_contracts.report import (
    Candidate as Candidate,
)
from stillhouse_contracts.report import (
    DistillationGain as DistillationGain,
)
from stillhouse_contracts.report import (
    EpochRecord as EpochRecord,
)
from stillhouse_contracts.report import (
    ModelMeasure as ModelMeasure,
)
from stillhouse_contracts.report import (
    Report as Report,
)
from stillhouse_contracts.report import (
    SpeedupSpread as SpeedupSpread,
)
from stillhouse_contracts.report import (
    Variant as Variant,
)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Fields named here are typed; a newer engine may add more, which pass through."""

    model_config = ConfigDict(extra="allow")


# --- requests --------------------------------------------------------------------------------


# Where a request leaves them out (the engine's own tests), the checkpoint cadences are these;
# the host sends its settings' (``Settings`` takes its defaults from here: one place).
CHECKPOINT_EVERY_STEPS = 1000
CHECKPOINT_EVERY_SECONDS = 30.0


class EngineLimits(_Closed):
    """The operator's caps on what the engine unpacks and reads. The host builds them from
    its settings and sends them in every request: the engine reads no settings of its own
    (``Settings`` takes its defaults from here)."""

    max_archive_entries: int = Field(default=100_000, ge=1)
    max_unpacked_bytes: int = Field(default=8 * 1024**3, ge=1)
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    max_compression_ratio: int = Field(default=20, ge=1)


class FileRef(_Closed):
    """An input file handed to the engine (a teacher, a dataset, a tokenizer): where it is
    (in a sandbox, the child's name for it), its format and its content's sha256."""

    path: str
    format: str
    sha256: str
    # Teachers: the output to distil and what it holds (None: the dry run decides again at
    # run time, see engine/teacher_outputs.py).
    output_name: str | None = None
    output_kind: str | None = None

    @classmethod
    def of(cls, path: Path | str, format: str) -> FileRef:
        """A local file, its sha256 read from its bytes."""
        with open(path, "rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        return cls(path=str(path), format=format, sha256=sha256)


class InspectTeacherRequest(_Closed):
    op: Literal["inspect_teacher"] = "inspect_teacher"
    path: str
    format: str
    allow_torchscript: bool = False
    output_name: str | None = None
    output_kind: str = "auto"
    tokenizer_path: str | None = None
    limits: EngineLimits = Field(default_factory=EngineLimits)


class InspectDatasetRequest(_Closed):
    op: Literal["inspect_dataset"] = "inspect_dataset"
    path: str
    format: str
    limits: EngineLimits = Field(default_factory=EngineLimits)


class DistillRequest(_Closed):
    op: Literal["distill"] = "distill"
    teachers: list[FileRef] = Field(min_length=1)
    transfer: FileRef
    eval: FileRef | None
    spec: JobSpec
    tokenizer: FileRef | None = Field(
        default=None, description="the first teacher's tokenizer.json (text datasets)"
    )
    workdir: str
    cache_dir: str
    stop_file: str = Field(
        description="the worker writes the stop's reason here (cancel | shutdown); the engine "
        "checkpoints and stops when it appears"
    )
    checkpoint_every: int = Field(ge=0)
    checkpoint_every_seconds: float = Field(ge=0)
    allow_torchscript: bool = False
    device: str | None = Field(default=None, description="None: cuda when available, else cpu")
    limits: EngineLimits = Field(default_factory=EngineLimits)


AnyRequest: TypeAlias = InspectTeacherRequest | InspectDatasetRequest | DistillRequest
CHILD_REQUEST: TypeAdapter[AnyRequest] = TypeAdapter(
    Annotated[AnyRequest, Field(discriminator="op")]
)


# --- events (child → worker) -----------------------------------------------------------------


class ProgressEvent(_Closed):
    event: Literal["progress"] = "progress"
    stage: Stage
    progress: float = Field(ge=0.0, le=1.0)
    epochs: int
    epoch: int | None = None
    step: int | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)


class EpochEvent(_Closed):
    event: Literal["epoch"] = "epoch"
    record: EpochRecord


class CheckpointEvent(_Closed):
    event: Literal["checkpoint"] = "checkpoint"
    epoch: int
    step: int


class ResumedEvent(_Closed):
    """Where a resumed run starts, with the records of the epochs its checkpoint had
    finished (the worker stores the ones a kill kept it from storing)."""

    event: Literal["resumed"] = "resumed"
    epoch: int
    step: int
    records: list[EpochRecord] = Field(default_factory=list)


def soft_labels_file(cache_dir: Path, key: str) -> Path:
    """Where the engine keeps the soft labels of ``key`` in a cache folder, and where the
    worker finds them to copy to the store (and puts them back for a resumed job)."""
    return cache_dir / f"soft-labels-{key}.safetensors"


class SoftLabelsEvent(_Closed):
    """The teachers' soft labels are stored under ``key`` in the worker's cache folder."""

    event: Literal["soft_labels"] = "soft_labels"
    key: str = Field(pattern="^[0-9a-f]{64}$")


class Outcome(_Closed):
    """The end of a successful distill run: the files to publish and the report. The engine
    returns it (``engine.engine.run_distillation``), the child sends it, the worker publishes
    it: one type from the engine to the API."""

    event: Literal["result"] = "result"
    files: dict[ExportFormat, Path] = Field(description="a sweep's: the chosen candidate's")
    report: Report
    metrics: dict[str, Any] = Field(default_factory=dict)
    candidates: list[dict[ExportFormat, Path]] = Field(
        default_factory=list, description="a sweep's: every candidate's files, by index"
    )


class TeacherInfo(_Open):
    event: Literal["teacher"] = "teacher"
    input_shape: list[int | None]
    input_dtype: str
    num_classes: int
    parameters: int | None = None


class DatasetInfo(_Open):
    event: Literal["dataset"] = "dataset"
    num_samples: int
    sample_shape: list[int]
    dtype: str
    has_labels: bool
    num_classes: int | None = None


StopReason: TypeAlias = Literal["cancel", "shutdown"]


class StoppedEvent(_Closed):
    """The engine stopped where the worker asked it to, after a checkpoint. ``reason``: the
    user cancelled the job, or the worker is shutting down (the job goes back to the queue
    and resumes from that checkpoint)."""

    event: Literal["stopped"] = "stopped"
    reason: StopReason


class ErrorEvent(_Closed):
    event: Literal["error"] = "error"
    code: str
    message: str


AnyEvent: TypeAlias = (
    ProgressEvent
    | EpochEvent
    | CheckpointEvent
    | ResumedEvent
    | SoftLabelsEvent
    | Outcome
    | TeacherInfo
    | DatasetInfo
    | StoppedEvent
    | ErrorEvent
)
_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(Annotated[AnyEvent, Field(discriminator="event")])


def parse_event(line: str) -> AnyEvent:
    """One line of the child's output as an event; anything else becomes an ``ErrorEvent``
    (``bad_child_output``) that ends the run, so that no caller reads a half-valid dict."""
    try:
        return _EVENT.validate_json(line)
    except ValidationError as exc:
        shown = line if len(line) <= 200 else line[:200] + "…"
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return ErrorEvent(
            code=ErrorCode.BAD_CHILD_OUTPUT,
            message=f"the engine wrote a line that is not an event ({where}: {first['msg']}): "
            f"{shown!r}",
        )
