"""What one attempt of a job writes about it: progress, history, heartbeats, and its end.

Every write is fenced by the attempt (``models.job_repository``): a worker that lost its
job's lease writes nothing more about it. Progress is throttled to one write per stage and
epoch every ``PROGRESS_EVERY_S``, the last one forced.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from core.contracts import (
    CheckpointEvent,
    EpochEvent,
    ProgressEvent,
    ResumedEvent,
    SoftLabelsEvent,
    StopReason,
)
from core.db import session_scope
from core.enums import JobEventKind
from core.errors import ErrorCode
from models.history_repository import HistoryRepository
from models.job_repository import JobRepository

PROGRESS_EVERY_S = 0.5

Fenced = CheckpointEvent | ResumedEvent | SoftLabelsEvent


class Recorder:
    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.pending: ProgressEvent | None = None
        self.written_key: tuple[Any, ...] = ()
        self.last_write = 0.0
        self.stage: str | None = None

    def progress(self, event: ProgressEvent | None = None, *, force: bool = False) -> None:
        """Note ``event`` and write the latest progress unless it was written just now for
        the same stage and epoch (``force``: write what is pending now)."""
        if event is not None:
            self.pending = event
        event = self.pending
        if event is None:
            return
        key = (event.stage, event.epoch)
        now = time.monotonic()
        if not force and key == self.written_key and now - self.last_write < PROGRESS_EVERY_S:
            return
        values: dict[str, Any] = {
            "stage": event.stage,
            "progress": event.progress,
            "epoch": event.epoch or 0,
        }
        if event.metrics:
            values["metrics"] = event.metrics
        with session_scope() as session:
            jobs = JobRepository(session)
            if jobs.progress(self.job_id, self.attempt, **values) and event.stage != self.stage:
                jobs.event(self.job_id, JobEventKind.STAGE, self.attempt, stage=event.stage)
                self.stage = event.stage
        self.pending, self.written_key, self.last_write = None, key, now

    def epoch(self, event: EpochEvent) -> None:
        with session_scope() as session:
            record = event.record.model_dump()
            HistoryRepository(session).add_epoch(self.job_id, self.attempt, record)

    def fenced(self, event: Fenced) -> bool:
        """Store the event in the job's history (a resumed run's also the epochs its
        checkpoint had finished that no attempt stored); False once the lease was lost."""
        data = event.model_dump(mode="json", exclude={"event", "records"})
        with session_scope() as session:
            if isinstance(event, ResumedEvent):
                records = [r.model_dump() for r in event.records]
                HistoryRepository(session).add_missing_epochs(self.job_id, self.attempt, records)
            kind = JobEventKind(event.event)
            return JobRepository(session).fenced_event(self.job_id, self.attempt, kind, **data)

    def soft_labels_key(self) -> str | None:
        """The key of the soft labels an earlier attempt computed, if any."""
        with session_scope() as session:
            stored = HistoryRepository(session).last_event(self.job_id, JobEventKind.SOFT_LABELS)
            key = None if stored is None else (stored.data or {}).get("key")
        return key if isinstance(key, str) else None

    def cancel_requested(self) -> bool:
        with session_scope() as session:
            return JobRepository(session).cancel_requested(self.job_id)

    def heartbeat(self, lease: timedelta) -> bool:
        """Renew the lease; False when another attempt took the job over."""
        with session_scope() as session:
            return JobRepository(session).heartbeat(self.job_id, self.attempt, lease)

    def fail(self, code: str, message: str) -> None:
        with session_scope() as session:
            JobRepository(session).fail(self.job_id, self.attempt, code=code, message=message)

    def stopped(self, reason: StopReason, max_attempts: int) -> bool:
        """The engine stopped after a checkpoint. A cancel ends the job; a shutdown gives it
        back to the queue (True: the caller raises ``HandedBack``) unless a cancel came
        meanwhile or this was its last attempt, which ends it as a lost worker's would."""
        with session_scope() as session:
            jobs = JobRepository(session)
            if reason == "cancel" or jobs.cancel_requested(self.job_id):
                jobs.cancel_running(self.job_id, self.attempt)
                return False
            if self.attempt < max_attempts:
                # False when a cancel came just now: the sweep ends it at the lease's end.
                return jobs.release(self.job_id, self.attempt, reason="worker_stopped")
            message = f"the worker stopped during the job's last attempt ({self.attempt})"
            jobs.fail(self.job_id, self.attempt, code=ErrorCode.WORKER_LOST, message=message)
            return False
