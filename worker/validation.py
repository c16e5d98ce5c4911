"""Validate uploads: the guarded loaders run in the sandbox and fill the row, or reject it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from core.contracts import InspectDatasetRequest, InspectTeacherRequest
from core.db import session_scope
from core.enums import UploadStatus
from core.settings import get_settings
from core.storage import get_storage
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from worker.sandbox import SandboxError, run_once

log = logging.getLogger(__name__)
VALIDATE_TIMEOUT_S = 600

# Either upload repository: the two share every method used here.
Repository = Callable[[Any], Any]


def _inspect(request: BaseModel) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    settings = get_settings()
    try:
        result = run_once(
            request,
            threads=1,
            memory_bytes=settings.validation_memory_bytes,
            cpu_seconds=VALIDATE_TIMEOUT_S,
            timeout_s=VALIDATE_TIMEOUT_S,
        )
    except SandboxError as exc:
        return None, {"code": exc.code, "message": exc.message}
    return result.model_dump(exclude={"event"}), None


def _validate(
    repository: Repository,
    row_id: str,
    make_request: Callable[[str, str, dict[str, Any]], BaseModel],
    metadata: Callable[[dict[str, Any]], dict[str, Any]],
    asks: Callable[[Any], dict[str, Any]] = lambda row: {},
) -> None:
    """Read the row, inspect its file in the sandbox (no session held meanwhile), then write
    ``ready`` with the metadata or ``rejected`` with the reason, unless the row moved on."""
    with session_scope() as session:
        row = repository(session).get(row_id)
        if row is None or row.status != UploadStatus.VALIDATING:
            return
        stored = StoredFileRepository(session).get(row.file_id)
        if stored is None:
            return
        request = make_request(
            str(get_storage().local_path(stored.key, stored.sha256)), row.format, asks(row)
        )
    info, error = _inspect(request)
    with session_scope() as session:
        repo = repository(session)
        row = repo.get(row_id)
        if row is None or row.status != UploadStatus.VALIDATING:
            return
        if error is not None:
            repo.update(row, status=UploadStatus.REJECTED, error=error)
            log.info("%s rejected: %s", row_id, error)
        else:
            assert info is not None
            repo.update(row, status=UploadStatus.READY, **metadata(info))


def validate_teacher(teacher_id: str) -> None:
    _validate(
        TeacherRepository,
        teacher_id,
        lambda path, fmt, asked: InspectTeacherRequest(
            path=path, format=fmt, allow_torchscript=get_settings().allow_torchscript, **asked
        ),
        lambda info: {
            "input_shape": info["input_shape"],
            "input_dtype": info["input_dtype"],
            "num_classes": info["num_classes"],
            "parameters": info.get("parameters"),
            "outputs": info.get("outputs"),
            "output_name": info.get("output_name"),
            "output_kind": info.get("output_kind"),
            "output_reason": info.get("output_reason"),
        },
        # What the upload asked for: the dry run honours it or rejects the teacher saying why.
        lambda row: {"output_name": row.output_name, "output_kind": row.output_kind or "auto"},
    )


def validate_dataset(dataset_id: str) -> None:
    _validate(
        DatasetRepository,
        dataset_id,
        lambda path, fmt, asked: InspectDatasetRequest(path=path, format=fmt),
        lambda info: {
            "num_samples": info["num_samples"],
            "sample_shape": info["sample_shape"],
            "dtype": info["dtype"],
            "has_labels": bool(info["has_labels"]),
            "num_classes": info.get("num_classes"),
        },
    )
