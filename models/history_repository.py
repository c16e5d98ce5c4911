"""A job's history: one row per finished epoch, and its stored events (oldest first)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.job_repository import JobRepository
from models.pagination import BadCursor
from models.tables import JobEpoch, JobEvent


class HistoryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_epoch(self, job_id: str, attempt: int, record: dict[str, Any]) -> bool:
        """Fenced by ``attempt`` like every worker write; False when the lease was lost."""
        if not JobRepository(self.session).holds(job_id, attempt):
            return False
        self.session.add(JobEpoch(job_id=job_id, attempt=attempt, **record))
        self.session.flush()
        return True

    def add_missing_epochs(self, job_id: str, attempt: int, records: list[dict[str, Any]]) -> bool:
        """Store the records of epochs that have no row yet (under ``attempt``, the one that
        found them in its checkpoint); fenced like ``add_epoch``."""
        if not JobRepository(self.session).holds(job_id, attempt):
            return False
        stmt = select(JobEpoch.epoch).where(JobEpoch.job_id == job_id)
        have = set(self.session.scalars(stmt))
        for record in records:
            if record["epoch"] not in have:
                self.session.add(JobEpoch(job_id=job_id, attempt=attempt, **record))
        self.session.flush()
        return True

    def epochs(self, job_id: str) -> list[JobEpoch]:
        stmt = select(JobEpoch).where(JobEpoch.job_id == job_id)
        return list(self.session.scalars(stmt.order_by(JobEpoch.epoch, JobEpoch.attempt)))

    def last_event(self, job_id: str, kind: str) -> JobEvent | None:
        stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
        return self.session.scalars(stmt.order_by(JobEvent.id.desc()).limit(1)).first()

    def events(
        self, job_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[JobEvent], str | None]:
        """Oldest first; the cursor is the id of the last event of the previous page."""
        stmt = select(JobEvent).where(JobEvent.job_id == job_id)
        if cursor:
            if not cursor.isdigit():
                raise BadCursor("invalid cursor")
            stmt = stmt.where(JobEvent.id > int(cursor))
        rows = list(self.session.scalars(stmt.order_by(JobEvent.id).limit(limit + 1)))
        if len(rows) <= limit:
            return rows, None
        return rows[:limit], str(rows[limit - 1].id)
