"""Request and response models (apart from the ORM classes). What crosses to the worker and
the engine (the job spec, the report) is the same class, from ``core``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.contracts import EpochRecord, Report
from core.enums import ExportFormat, JobEventKind, JobStatus, Stage, UploadStatus
from core.outputs import RequestedOutputKind
from core.spec import JobSpec

T = TypeVar("T")


class ErrorInfo(BaseModel):
    code: str
    message: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class TeacherOutput(BaseModel):
    name: str
    dtype: str = Field(description='e.g. "float32", "int64" or "seq(map(int64,float))" (ZipMap)')
    shape: list[int | None] | None = Field(description="null for the batch dimension")


class TeacherInput(BaseModel):
    name: str
    dtype: str = Field(description='e.g. "float32", "int64"')
    shape: list[int | None] | None = Field(description="null for dynamic dimensions")


class TokenizerInfo(BaseModel):
    vocab_size: int
    max_length: int | None = Field(description="its truncation length, when it sets one")
    sha256: str


class TeacherRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str
    format: Literal["onnx", "torch_export", "torchscript", "hf"]
    size_bytes: int
    sha256: str
    status: UploadStatus
    input_shape: list[int | None] | None
    input_dtype: str | None
    num_classes: int | None
    parameters: int | None
    outputs: list[TeacherOutput] | None = Field(
        default=None, description="every output the validation dry run saw"
    )
    output_name: str | None = Field(
        default=None, description="the output used as class scores (as asked, until validated)"
    )
    output_kind: RequestedOutputKind | None = Field(
        default=None,
        description='what that output holds; "auto" until the validation dry run decides',
    )
    output_reason: str | None = Field(
        default=None, description="which output was picked and why, and why of that kind"
    )
    inputs: list[TeacherInput] | None = Field(
        default=None,
        description="every input (name, dtype, shape); input_shape and input_dtype describe "
        "the first",
    )
    input_kind: Literal["tensor", "tokens"] | None = Field(
        default=None, description='"tokens": integer inputs [N, L] such as input_ids'
    )
    task: Literal["classification", "language_model"] | None = None
    vocab_size: int | None = Field(
        default=None, description="token teachers: the rows of the embedding the ids index"
    )
    tokenizer: TokenizerInfo | None = Field(
        default=None, description="the tokenizer.json uploaded with the teacher, once validated"
    )
    error: ErrorInfo | None
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str
    format: Literal["npy", "npz", "csv", "parquet", "image_zip", "jsonl"]
    size_bytes: int
    sha256: str
    status: UploadStatus
    num_samples: int | None
    sample_shape: list[int] | None
    dtype: str | None
    has_labels: bool
    num_classes: int | None
    kind: Literal["tensor", "tokens", "text"] | None = Field(
        default=None, description="tokens: arrays named like a token teacher's inputs"
    )
    inputs: list[str] | None = Field(
        default=None, description="token datasets: the names of their arrays"
    )
    error: ErrorInfo | None
    created_at: datetime


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    stage: Stage | None
    progress: float
    epoch: int
    epochs: int
    metrics: dict[str, Any]
    error: ErrorInfo | None
    spec: JobSpec
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report: Report | None
    attempt: int
    student_formats: list[ExportFormat]


class EpochRow(EpochRecord):
    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(description="the attempt that ran it (a resumed job has several)")


class Metrics(BaseModel):
    items: list[EpochRow]


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: JobEventKind
    attempt: int | None
    data: dict[str, Any]
    created_at: datetime


class StudentArchitecture(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str
    input_ranks: list[int]
    knobs: dict[str, Any]


KeyScope = Literal["read", "write", "admin"]
WebhookEvent = Literal["job.succeeded", "job.failed", "job.cancelled"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    scope: KeyScope = "write"


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    prefix: str
    name: str
    scope: KeyScope
    created_at: datetime
    last_used_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="the API key itself: shown once, stored hashed")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, examples=["https://example.com/hooks/stillhouse"])
    events: list[WebhookEvent] = Field(min_length=1, max_length=3)


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[WebhookEvent]
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(description="'whsec_<base64>': verifies signatures; shown once")


class DeliveryRead(BaseModel):
    """One delivery attempt of one event (the delivery log)."""

    id: str
    message_id: str = Field(description="the webhook-id header, the same on every attempt")
    event: WebhookEvent
    job_id: str | None
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    created_at: datetime
    message_status: Literal["pending", "delivered", "failed"]
    next_attempt_at: datetime | None
