"""What crosses a process boundary, as pydantic contracts (no torch here).

API → worker → sandboxed engine child: the worker sends the child one ``ChildRequest`` on
stdin; the child answers with ``ChildEvent`` JSON lines on its own channel (progress,
finished epochs, checkpoints, then exactly one outcome or error). One side writes them with
``model_dump_json``, the other validates them with ``parse_event``: a line that is not one
of these events is a protocol error, never a ``KeyError`` later. The ``Report`` is also the
API's response model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.enums import ExportFormat, Stage
from core.errors import ErrorCode
from core.spec import AugmentationSpec, JobSpec, LossName, SoftLabelMode


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Fields named here are typed; a newer engine may add more, which pass through."""

    model_config = ConfigDict(extra="allow")


# --- requests --------------------------------------------------------------------------------


class FileRef(_Closed):
    path: str
    format: str
    sha256: str
    # Teachers: the output to distil and what it holds (None: picked again at run time).
    output_name: str | None = None
    output_kind: str | None = None


class InspectTeacherRequest(_Closed):
    op: Literal["inspect_teacher"] = "inspect_teacher"
    path: str
    format: str
    allow_torchscript: bool = False
    output_name: str | None = None
    output_kind: str = "auto"
    tokenizer_path: str | None = None


class InspectDatasetRequest(_Closed):
    op: Literal["inspect_dataset"] = "inspect_dataset"
    path: str
    format: str


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
    stop_file: str
    checkpoint_every: int = Field(ge=0)
    checkpoint_every_seconds: float = Field(ge=0)
    allow_torchscript: bool = False
    device: str | None = Field(default=None, description="None: cuda when available, else cpu")


AnyRequest: TypeAlias = InspectTeacherRequest | InspectDatasetRequest | DistillRequest
CHILD_REQUEST: TypeAdapter[AnyRequest] = TypeAdapter(
    Annotated[AnyRequest, Field(discriminator="op")]
)


# --- the report ------------------------------------------------------------------------------


class ModelMeasure(_Open):
    parameters: int | None = Field(description="None when a teacher's count is unknown")
    size_bytes_fp32: int | None
    size_bytes_fp16: int | None
    latency_ms_batch1: float
    throughput_per_s: float
    runtime: str | None = None
    file_bytes: dict[str, int] | None = None


class SpeedupSpread(_Open):
    """Teacher and student timed interleaved, in short rounds: the rounds' speedups."""

    median: float
    min: float
    max: float
    iqr_relative: float = Field(description="interquartile range / median")
    rounds: int
    disturbed: bool = Field(description="iqr_relative past 0.25: a load came and went")


class Variant(_Open):
    """One downloadable file of the student, measured as a user runs it on the worker's CPU
    (ONNX Runtime for the ONNX files), on the same eval samples as the student."""

    format: ExportFormat
    size_bytes: int
    latency_ms_batch1: float
    throughput_per_s: float = Field(description="samples a second at throughput_batch")
    throughput_batch: int | None = None
    runtime: str | None = None
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float | None = None
    agreement_loss: float | None = Field(
        default=None, description="fp32 ONNX agreement minus this one's (variants only)"
    )
    within_margin: bool | None = Field(
        default=None, description="agreement_loss at most export.agreement_margin"
    )


class Candidate(_Open):
    """One student of a sweep: its spec values and what it measured on the eval set."""

    index: int = Field(ge=0, description="GET /v1/jobs/{id}/student?candidate=index")
    temperature: float
    alpha: float
    size_ratio: float
    parameters: int
    latency_ms_batch1: float
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float
    variants: list[Variant] | None = Field(
        default=None, description="this candidate's files, measured as the top level's are"
    )
    pareto: bool | None = Field(
        default=None,
        description="on the Pareto front: no other candidate has as few or fewer parameters, "
        "as low or lower latency and as much or more agreement and accuracy, better in one",
    )


class Baseline(_Open):
    """The chosen student's architecture and size trained on the hard labels alone."""

    parameters: int
    latency_ms_batch1: float
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float


class DistillationGain(_Open):
    """The distilled student's number minus the baseline's."""

    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float


class Report(_Open):
    """Sizes, speed, agreement and timings of a finished job (stored with the job)."""

    teacher: ModelMeasure
    student: ModelMeasure
    compression_ratio: float | None = Field(description="teacher / student parameters")
    speedup: float = Field(
        description="student throughput / teacher throughput: the median of interleaved rounds"
    )
    speedup_spread: SpeedupSpread | None = Field(
        default=None, description="the rounds behind speedup, and whether a load disturbed them"
    )
    agreement_top1: float
    agreement_top5: float | None = None
    kl_divergence: float = Field(description="mean KL(teacher || student) at T=1, eval set")
    teacher_accuracy: float | None
    student_accuracy: float | None
    eval_samples: int
    device: str
    device_name: str | None = Field(default=None, description="the GPU's or the CPU's model")
    soft_labels: SoftLabelMode
    loss: LossName | None = Field(default=None, description="the distillation loss that ran")
    jacobian_weight: float | None = Field(default=None, description="kd_jacobian only")
    augmentation: AugmentationSpec | None = Field(
        default=None, description="the augmentation applied (None: none)"
    )
    timings_s: dict[str, float]
    sequence_length: int | None = Field(
        default=None,
        description="token teachers: the tokens a sample the latency and throughput were "
        "measured at (the dataset's padded length)",
    )
    metrics_source: ExportFormat | None = None
    student_files: dict[str, str] | None = Field(default=None, description="format → sha256")
    variants: list[Variant] | None = Field(
        default=None,
        description="every downloadable format: size, speed, agreement with the teacher",
    )
    candidates: list[Candidate] | None = Field(
        default=None, description="a sweep's students, by index; the top level is the chosen one"
    )
    chosen: int | None = Field(
        default=None,
        description="the best eval agreement, or the smallest candidate within 0.5 point of it",
    )
    baseline: Baseline | None = Field(default=None, description="with baseline: true")
    distillation_gain: DistillationGain | None = None


# --- events (child → worker) -----------------------------------------------------------------


class EpochRecord(_Closed):
    """One finished epoch (``GET /v1/jobs/{id}/metrics``)."""

    epoch: int = Field(ge=1)
    train_loss: float | None
    soft_loss: float | None
    hard_loss: float | None = Field(description="None without labels")
    eval_agreement: float | None
    learning_rate: float | None
    seconds: float


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


class SoftLabelsEvent(_Closed):
    """The teachers' soft labels are stored under ``key`` in the worker's cache folder."""

    event: Literal["soft_labels"] = "soft_labels"
    key: str = Field(pattern="^[0-9a-f]{64}$")


class Outcome(_Closed):
    """The end of a successful distill run: the files to publish and the report."""

    event: Literal["result"] = "result"
    files: dict[ExportFormat, str]
    report: Report
    metrics: dict[str, Any] = Field(default_factory=dict)
    candidates: list[dict[ExportFormat, str]] = Field(
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
