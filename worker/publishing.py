"""A finished job's students: stored under keys derived from the job, then the job finished
with its report and artifacts in one transaction (fenced by the attempt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.artifacts import Artifact, Artifacts
from core.contracts import Outcome
from core.db import session_scope
from core.enums import EXTENSIONS, ExportFormat
from core.storage import get_storage
from models import StoredFile, new_id, utcnow
from models.job_repository import JobRepository
from models.repositories import StoredFileRepository


def publish(job_id: str, attempt: int, tenant_id: str, result: Outcome) -> dict[str, Any] | None:
    """Store the students (a sweep's candidates each in a folder; the chosen one's files are
    also the job's) and finish the job. The report as written, or None when this attempt had
    lost the job meanwhile (then its files are removed again)."""
    rows: list[StoredFile] = []
    files = _Files(job_id, attempt, tenant_id, rows)
    if result.candidates:
        listed = [
            files.store(by_format, f"candidate-{i}")
            for i, by_format in enumerate(result.candidates)
        ]
        artifacts = Artifacts(student=listed[result.report.chosen or 0], candidates=listed)
    else:
        artifacts = Artifacts(student=files.store(result.files, ""))
    report = result.report.model_copy(
        update={"student_files": {f: a.sha256 for f, a in artifacts.student.items()}}
    ).model_dump(mode="json")
    with session_scope() as session:
        finished = JobRepository(session).finish(
            job_id,
            attempt,
            report=report,
            artifacts=artifacts.model_dump(mode="json"),
            metrics=result.metrics,
        )
        if finished:
            for row in rows:
                StoredFileRepository(session).add(row)
    if not finished:
        storage = get_storage()
        for art in artifacts.every():
            storage.delete(art.key)
        return None
    return report


class _Files:
    def __init__(self, job_id: str, attempt: int, tenant_id: str, rows: list[StoredFile]) -> None:
        self.job_id, self.attempt, self.tenant_id, self.rows = job_id, attempt, tenant_id, rows

    def store(self, files: dict[ExportFormat, Path], tag: str) -> dict[str, Artifact]:
        """Store one student's files (a candidate's: in a folder named ``tag``); their
        artifacts. The rows to add go to ``rows``."""
        storage = get_storage()
        artifacts: dict[str, Artifact] = {}
        for fmt, path in files.items():
            ext = EXTENSIONS[fmt]
            folder = f"students/{self.job_id}/attempt-{self.attempt}/{tag + '/' if tag else ''}"
            key = f"{folder}student.{ext}"
            put = storage.put_file(key, path)
            file_id = new_id("file")
            filename = f"student-{self.job_id}{'-' + tag if tag else ''}.{ext}"
            self.rows.append(
                StoredFile(
                    id=file_id,
                    tenant_id=self.tenant_id,
                    key=key,
                    kind="student",
                    filename=filename,
                    size_bytes=put.size_bytes,
                    sha256=put.sha256,
                    created_at=utcnow(),
                )
            )
            artifacts[fmt] = Artifact(
                file_id=file_id,
                key=key,
                sha256=put.sha256,
                size_bytes=put.size_bytes,
                filename=filename,
            )
        return artifacts
