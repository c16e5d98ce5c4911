"""Validate uploads: the guarded loaders run in the sandbox and fill the row, or reject it."""

from __future__ import annotations

import logging
from typing import Any

from core.db import session_scope
from core.settings import get_settings
from core.storage import get_storage
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from worker.sandbox import SandboxError, run_once

log = logging.getLogger(__name__)
VALIDATE_TIMEOUT_S = 600


def _file_path(session: Any, file_id: str) -> str | None:
    stored = StoredFileRepository(session).get(file_id)
    return None if stored is None else str(get_storage().local_path(stored.key))


def _inspect(request: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    settings = get_settings()
    try:
        result = run_once(
            request,
            threads=1,
            memory_bytes=settings.sandbox_memory_bytes,
            cpu_seconds=VALIDATE_TIMEOUT_S,
            timeout_s=VALIDATE_TIMEOUT_S,
        )
    except SandboxError as exc:
        return None, {"code": exc.code, "message": exc.message}
    result.pop("event", None)
    return result, None


def validate_teacher(teacher_id: str) -> None:
    with session_scope() as session:
        row = TeacherRepository(session).get(teacher_id)
        if row is None or row.status != "validating":
            return
        path, fmt = _file_path(session, row.file_id), row.format
    if path is None:
        return
    info, error = _inspect(
        {
            "op": "inspect_teacher",
            "path": path,
            "format": fmt,
            "allow_torchscript": get_settings().allow_torchscript,
        }
    )
    with session_scope() as session:
        repo = TeacherRepository(session)
        row = repo.get(teacher_id)
        if row is None or row.status != "validating":
            return
        if error is not None:
            repo.update(row, status="rejected", error=error)
            log.info("teacher %s rejected: %s", teacher_id, error)
            return
        assert info is not None
        repo.update(
            row,
            status="ready",
            input_shape=info["input_shape"],
            input_dtype=info["input_dtype"],
            num_classes=info["num_classes"],
            parameters=info.get("parameters"),
        )


def validate_dataset(dataset_id: str) -> None:
    with session_scope() as session:
        row = DatasetRepository(session).get(dataset_id)
        if row is None or row.status != "validating":
            return
        path, fmt = _file_path(session, row.file_id), row.format
    if path is None:
        return
    info, error = _inspect({"op": "inspect_dataset", "path": path, "format": fmt})
    with session_scope() as session:
        repo = DatasetRepository(session)
        row = repo.get(dataset_id)
        if row is None or row.status != "validating":
            return
        if error is not None:
            repo.update(row, status="rejected", error=error)
            log.info("dataset %s rejected: %s", dataset_id, error)
            return
        assert info is not None
        repo.update(
            row,
            status="ready",
            num_samples=info["num_samples"],
            sample_shape=info["sample_shape"],
            dtype=info["dtype"],
            has_labels=bool(info["has_labels"]),
            num_classes=info.get("num_classes"),
        )
