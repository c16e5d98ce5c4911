"""What the API answers, as pydantic classes: the SDK returns these instead of plain dicts.

They follow the REST contract (version 1): fields are never renamed or dropped there, new
ones may appear at any time, so every model keeps fields it does not know (``extra="allow"``)
and only the fields the contract marks as always present are required. Mapping access
(``job["status"]``) keeps working for scripts written against the dict-returning SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from stillhouse_contracts import report as wire
from stillhouse_contracts.spec import JobSpec

__all__ = ["JobSpec"]  # build a job's spec with its defaults and checks: ``JobSpec(...)``

T = TypeVar("T")

UploadStatus = Literal["validating", "ready", "rejected"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Stage = Literal["soft_labeling", "training", "evaluating", "exporting"]
UploadKind = Literal["teachers", "datasets"]
StudentFormat = Literal["torch_export", "onnx", "safetensors"]
TERMINAL: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")


class ApiModel(BaseModel):
    """Base of every answer: unknown fields are kept, ``obj["field"]`` reads a field."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


class ErrorInfo(ApiModel):
    code: str
    message: str


class Page(ApiModel, Generic[T]):
    """One page of a collection; ``next_cursor`` is None on the last one."""

    items: list[T]
    next_cursor: str | None = None


class Teacher(ApiModel):
    id: str
    name: str = ""
    filename: str = ""
    format: str
    size_bytes: int
    sha256: str
    status: UploadStatus
    input_shape: list[int | None] | None = None
    input_dtype: str | None = None
    num_classes: int | None = None
    parameters: int | None = None
    inputs: list[dict[str, Any]] | None = None
    input_kind: str | None = None
    task: str | None = None
    tokenizer: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    created_at: datetime


class Dataset(ApiModel):
    id: str
    name: str = ""
    filename: str = ""
    format: str
    size_bytes: int
    sha256: str
    status: UploadStatus
    num_samples: int | None = None
    sample_shape: list[int] | None = None
    dtype: str | None = None
    has_labels: bool = False
    num_classes: int | None = None
    kind: str | None = None  # "tensor", "tokens" or "text"
    inputs: list[str] | None = None  # a token dataset's arrays or columns
    error: ErrorInfo | None = None
    created_at: datetime


# The report and the epoch rows are the service's own contracts (``stillhouse_contracts``,
# plain pydantic, shipped with the client), so the SDK cannot drift from what the service writes.


class ModelMeasure(ApiModel, wire.ModelMeasure):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Report(ApiModel, wire.Report):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    teacher: ModelMeasure
    student: ModelMeasure


class Job(ApiModel):
    id: str
    status: JobStatus
    stage: Stage | None = None
    progress: float = 0.0
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report: Report | None = None
    attempt: int = 0
    student_formats: list[str] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class JobProgress(ApiModel):
    """The data of a ``progress`` event on a job's event stream."""

    id: str
    status: JobStatus
    stage: Stage | None = None
    progress: float = 0.0
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 0


class JobEvent(ApiModel):
    """One server-sent event: ``progress`` while the job runs, a final ``status`` (the Job)."""

    event: str
    id: str | None = None
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event == "status"

    def progress(self) -> JobProgress:
        return JobProgress.model_validate(self.data)

    def job(self) -> Job:
        return Job.model_validate(self.data)


class EpochMetrics(ApiModel, wire.EpochRecord):
    """One finished epoch, with the attempt that trained it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    attempt: int | None = None


class StudentArchitecture(ApiModel):
    name: str
    description: str = ""
    input_ranks: list[int] = Field(default_factory=list)
    knobs: dict[str, Any] = Field(default_factory=dict)


KINDS: dict[str, type[ApiModel]] = {
    "teachers": Teacher,
    "datasets": Dataset,
    "jobs": Job,
    "students": StudentArchitecture,
}
