"""Request and response models (apart from the ORM classes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.outputs import RequestedOutputKind

T = TypeVar("T")

UploadStatus = Literal["validating", "ready", "rejected"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Stage = Literal["soft_labeling", "training", "evaluating", "exporting"]


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


class TeacherRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str
    format: Literal["onnx", "torch_export", "torchscript"]
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
    error: ErrorInfo | None
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str
    format: Literal["npy", "npz", "csv", "parquet", "image_zip"]
    size_bytes: int
    sha256: str
    status: UploadStatus
    num_samples: int | None
    sample_shape: list[int] | None
    dtype: str | None
    has_labels: bool
    num_classes: int | None
    error: ErrorInfo | None
    created_at: datetime


class ModelMeasure(BaseModel):
    model_config = ConfigDict(extra="allow")

    parameters: int
    size_bytes_fp32: int
    size_bytes_fp16: int
    latency_ms_batch1: float
    throughput_per_s: float


class Report(BaseModel):
    model_config = ConfigDict(extra="allow")

    teacher: ModelMeasure
    student: ModelMeasure
    compression_ratio: float
    speedup: float
    agreement_top1: float
    kl_divergence: float
    teacher_accuracy: float | None
    student_accuracy: float | None
    eval_samples: int
    device: str
    soft_labels: Literal["cached", "online"]
    timings_s: dict[str, float]


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
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report: Report | None
    attempt: int
    student_formats: list[str]


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
