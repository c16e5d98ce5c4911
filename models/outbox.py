"""The transactional outbox: a task to publish, written in the transaction of the row it
concerns, so that a committed job or upload is never left without its message.

The API publishes right after its commit and deletes the entry; when the broker is away the
entry stays, and the drainers (each API process, and the worker's periodic sweep) publish it
once the broker takes it (``drain``). Delivery is at least once: every task is idempotent (a job is
claimed by a conditional update, an upload is validated only while ``validating``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, String, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import session_scope
from models.base import Base, JSONType, UTCDateTime, utcnow

log = logging.getLogger(__name__)


class TaskOutbox(Base):
    __tablename__ = "task_outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, task: str, args: list[str]) -> int:
        entry = TaskOutbox(task=task, args=args, created_at=utcnow())
        self.session.add(entry)
        self.session.flush()
        return entry.id

    def due(self, created_before: datetime, limit: int) -> list[TaskOutbox]:
        """The oldest entries made before ``created_before``, locked for this transaction.

        ``SKIP LOCKED`` lets several drainers (API processes, the sweep) work side by side
        without publishing the same entry twice; SQLite ignores it (one writer at a time)."""
        stmt = (
            select(TaskOutbox)
            .where(TaskOutbox.created_at < created_before)
            .order_by(TaskOutbox.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(self.session.scalars(stmt))

    def remove(self, entry_id: int) -> None:
        self.session.execute(delete(TaskOutbox).where(TaskOutbox.id == entry_id))

    def failed(self, entry_id: int, error: str) -> None:
        self.session.execute(
            update(TaskOutbox)
            .where(TaskOutbox.id == entry_id)
            .values(attempts=TaskOutbox.attempts + 1, last_error=error[:500])
        )

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(TaskOutbox)) or 0


Publish = Callable[[str, list[str]], None]
BATCH = 100


def drain(publish: Publish, *, min_age_s: float = 0.0, limit: int = BATCH) -> int:
    """Publish entries older than ``min_age_s`` (younger ones are still being published by
    the request that made them), oldest first. Stops at the first refusal: the broker is
    away and the rest would fail the same way. Returns how many were published."""
    published = 0
    with session_scope() as session:
        outbox = OutboxRepository(session)
        for entry in outbox.due(utcnow() - timedelta(seconds=min_age_s), limit):
            try:
                publish(entry.task, list(entry.args))
            except Exception as exc:  # any broker failure: keep the entry, try again later
                outbox.failed(entry.id, f"{type(exc).__name__}: {exc}")
                log.warning("outbox: the broker refused %s (%s); will retry", entry.task, exc)
                break
            outbox.remove(entry.id)
            published += 1
    if published:
        log.info("outbox: published %d waiting task(s)", published)
    return published
