"""Closed sets of names that cross the API, the database and the engine: one place each."""

from __future__ import annotations

from enum import StrEnum

# The export formats are part of the job spec, which ships with the client.
from stillhouse_contracts.enums import ExportFormat as ExportFormat


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL: tuple[JobStatus, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class UploadStatus(StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    REJECTED = "rejected"


class Stage(StrEnum):
    """The stages of a running job, in order."""

    SOFT_LABELING = "soft_labeling"
    TRAINING = "training"
    EVALUATING = "evaluating"
    EXPORTING = "exporting"


# What a stored file's name ends with: the variants are ONNX files too.
EXTENSIONS: dict[ExportFormat, str] = {
    ExportFormat.TORCH_EXPORT: "pt2",
    ExportFormat.ONNX: "onnx",
    ExportFormat.SAFETENSORS: "safetensors",
    ExportFormat.ONNX_FP16: "fp16.onnx",
    ExportFormat.ONNX_INT8: "int8.onnx",
}


class JobEventKind(StrEnum):
    """What the stored history of a job records (``GET /v1/jobs/{id}/events``, JSON)."""

    CREATED = "created"
    QUEUED = "queued"
    STARTED = "started"
    STAGE = "stage"
    RESUMED = "resumed"
    CHECKPOINT = "checkpoint"
    SOFT_LABELS = "soft_labels"
    CANCELLED = "cancelled"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
