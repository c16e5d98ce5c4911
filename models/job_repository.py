"""Every statement about jobs. Writes by a worker are fenced by ``attempt``: a worker whose
lease was taken over matches no row, so it can no longer write progress or results."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from core.enums import ACTIVE, JobEventKind, JobStatus
from core.errors import ErrorCode
from models.base import utcnow
from models.pagination import newest_first, page
from models.tables import Job, JobDataset, JobEvent, JobTeacher
from models.webhook_repository import WebhookRepository

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, job: Job, teacher_ids: list[str], datasets: dict[str, str]) -> Job:
        self.session.add(job)
        self.session.flush()
        for position, teacher_id in enumerate(teacher_ids):
            self.session.add(JobTeacher(job_id=job.id, position=position, teacher_id=teacher_id))
        for role, dataset_id in datasets.items():
            self.session.add(JobDataset(job_id=job.id, role=role, dataset_id=dataset_id))
        self.event(job.id, JobEventKind.CREATED)
        self.event(job.id, JobEventKind.QUEUED)
        self.session.flush()
        return job

    def event(
        self, job_id: str, kind: JobEventKind, attempt: int | None = None, **data: Any
    ) -> None:
        """Append to the job's history (a worker's caller fences it: see ``fenced_event``)."""
        self.session.add(JobEvent(job_id=job_id, kind=kind, attempt=attempt, data=data))

    def teacher_ids(self, job_id: str) -> list[str]:
        stmt = select(JobTeacher.teacher_id).where(JobTeacher.job_id == job_id)
        return list(self.session.scalars(stmt.order_by(JobTeacher.position)))

    def dataset_roles(self, job_id: str) -> dict[str, str]:
        """{"transfer": dataset id, "eval": dataset id (when given)}."""
        stmt = select(JobDataset.role, JobDataset.dataset_id).where(JobDataset.job_id == job_id)
        return {role: dataset_id for role, dataset_id in self.session.execute(stmt)}

    def delete(self, job: Job) -> None:
        """The row, its links and its history (the foreign keys cascade)."""
        self.session.delete(job)
        self.session.flush()

    def get(self, job_id: str) -> Job | None:
        return self.session.get(Job, job_id)

    def get_for_tenant(self, tenant_id: str, job_id: str) -> Job | None:
        return self.session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))

    def by_idempotency_key(self, tenant_id: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
        return self.session.scalar(stmt)

    def list_for_tenant(
        self, tenant_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        stmt = select(Job).where(Job.tenant_id == tenant_id)
        if status:
            stmt = stmt.where(Job.status == status)
        return page(list(self.session.scalars(newest_first(stmt, Job, limit, cursor))), limit)

    def revision(self, job_id: str) -> int | None:
        return self.session.scalar(select(Job.revision).where(Job.id == job_id))

    # worker side -------------------------------------------------------------------------
    def claim(self, job_id: str, *, worker: str, lease: timedelta, max_attempts: int) -> int | None:
        """Take the job if it is queued, or running with an expired lease. Returns the attempt.

        One conditional UPDATE: of two deliveries of the same message, one matches the row and
        the other finds it claimed (lease in the future) and does nothing.
        """
        now = utcnow()
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.cancel_requested.is_(False),
                Job.attempt < max_attempts,
                or_(
                    Job.status == QUEUED,
                    (Job.status == RUNNING) & (Job.lease_expires_at < now),
                ),
            )
            .values(
                status=RUNNING,
                attempt=Job.attempt + 1,
                lease_expires_at=now + lease,
                worker=worker,
                started_at=func.coalesce(Job.started_at, now),
                revision=Job.revision + 1,
                updated_at=now,
            )
            .returning(Job.attempt)
        )
        attempt = self.session.scalar(stmt)
        if attempt is not None:
            self.event(job_id, JobEventKind.STARTED, attempt, worker=worker)
        self.session.flush()
        return attempt

    def _fenced(self, job_id: str, attempt: int, **values: Any) -> bool:
        values.setdefault("updated_at", utcnow())
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.attempt == attempt, Job.status == RUNNING)
            .values(revision=Job.revision + 1, **values)
        )
        result = self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    def holds(self, job_id: str, attempt: int) -> bool:
        """Whether ``attempt`` still owns the job; it locks the row (Postgres) until the
        transaction ends, so a write that follows in the same transaction is fenced too."""
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.attempt == attempt, Job.status == RUNNING)
            .values(updated_at=utcnow())
        )
        return bool(getattr(self.session.execute(stmt), "rowcount", 0))

    def fenced_event(self, job_id: str, attempt: int, kind: JobEventKind, **data: Any) -> bool:
        if not self.holds(job_id, attempt):
            return False
        self.event(job_id, kind, attempt, **data)
        return True

    def _ended(self, job_id: str, attempt: int, **values: Any) -> bool:
        """A fenced write of a terminal status, with its webhook events in the same transaction."""
        if not self._fenced(job_id, attempt, **values):
            return False
        WebhookRepository(self.session).enqueue_job_event(job_id)
        return True

    def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.attempt == attempt, Job.status == RUNNING)
            .values(lease_expires_at=utcnow() + lease)
        )
        return bool(getattr(self.session.execute(stmt), "rowcount", 0))

    def progress(self, job_id: str, attempt: int, **values: Any) -> bool:
        return self._fenced(job_id, attempt, **values)

    def finish(
        self,
        job_id: str,
        attempt: int,
        *,
        report: dict[str, Any],
        artifacts: dict[str, Any],
        metrics: dict[str, Any],
    ) -> bool:
        done = self._ended(
            job_id,
            attempt,
            metrics=metrics,
            status=JobStatus.SUCCEEDED,
            stage=None,
            progress=1.0,
            report=report,
            artifacts=artifacts,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        if done:
            self.event(job_id, JobEventKind.SUCCEEDED, attempt)
        return done

    def fail(self, job_id: str, attempt: int, *, code: str, message: str) -> bool:
        error = {"code": code, "message": message}
        done = self._ended(
            job_id,
            attempt,
            status=JobStatus.FAILED,
            error=error,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        if done:
            self.event(job_id, JobEventKind.FAILED, attempt, **error)
        return done

    def cancel_running(self, job_id: str, attempt: int) -> bool:
        done = self._ended(
            job_id, attempt, status=JobStatus.CANCELLED, finished_at=utcnow(), lease_expires_at=None
        )
        if done:
            self.event(job_id, JobEventKind.CANCELLED, attempt)
        return done

    def release(self, job_id: str, attempt: int, reason: str = "released") -> bool:
        """Give a job back (a transient fault, its worker stopping): queued again, the next
        claim resumes it. Not once a cancel was asked, in the same statement: a queued job
        with a cancel asked is never claimed, so it would stay queued; running, it is
        cancelled by its worker or, when its lease runs out, by the sweep."""
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.attempt == attempt,
                Job.status == RUNNING,
                Job.cancel_requested.is_(False),
            )
            .values(
                status=QUEUED,
                lease_expires_at=None,
                revision=Job.revision + 1,
                updated_at=utcnow(),
            )
        )
        done = bool(getattr(self.session.execute(stmt), "rowcount", 0))
        if done:
            self.event(job_id, JobEventKind.QUEUED, attempt, reason=reason)
        return done

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    # API side ----------------------------------------------------------------------------
    def request_cancel(self, job: Job) -> None:
        """Queued jobs end at once; running ones get the flag their worker reads every step."""
        now = utcnow()
        values: dict[str, Any] = {"cancel_requested": True, "updated_at": now}
        queued = job.status == QUEUED
        if queued:
            values.update(status=JobStatus.CANCELLED, finished_at=now)
        result = self.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.in_(ACTIVE))
            .values(revision=Job.revision + 1, **values)
        )
        if queued and bool(getattr(result, "rowcount", 0)):
            self.event(job.id, JobEventKind.CANCELLED)
        self.session.flush()
        self.session.refresh(job)
        if getattr(result, "rowcount", 0) and values.get("status") == "cancelled":
            WebhookRepository(self.session).enqueue_job_event(job.id)

    # sweep -------------------------------------------------------------------------------
    def stale(self, now: datetime) -> list[Job]:
        stmt = select(Job).where(Job.status == RUNNING, Job.lease_expires_at < now)
        return list(self.session.scalars(stmt))

    def fail_exhausted(self, job: Job, max_attempts: int) -> bool:
        error = {
            "code": ErrorCode.WORKER_LOST,
            "message": f"the worker running this job stopped {max_attempts} times; giving up",
        }
        stmt = (
            update(Job)
            .where(Job.id == job.id, Job.attempt == job.attempt, Job.status == RUNNING)
            .values(
                status=JobStatus.FAILED,
                error=error,
                finished_at=utcnow(),
                lease_expires_at=None,
                revision=Job.revision + 1,
            )
        )
        done = bool(getattr(self.session.execute(stmt), "rowcount", 0))
        if done:
            self.event(job.id, JobEventKind.FAILED, job.attempt, **error)
            WebhookRepository(self.session).enqueue_job_event(job.id)
        return done

    def running_on(self, worker_prefix: str) -> list[Job]:
        stmt = select(Job).where(Job.status == RUNNING, Job.worker.startswith(worker_prefix))
        return list(self.session.scalars(stmt))

    def expire_lease(self, job_id: str, attempt: int) -> bool:
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.attempt == attempt, Job.status == RUNNING)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        return bool(getattr(self.session.execute(stmt), "rowcount", 0))

    def touch(self, job_id: str) -> None:
        self.session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))

    def queued_older_than(self, cutoff: datetime) -> list[Job]:
        stmt = select(Job).where(Job.status == QUEUED, Job.updated_at < cutoff)
        return list(self.session.scalars(stmt))


_JOBS = Job.__table__
_ONE_JOB = select(_JOBS).where(
    _JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id")
)


def read_job_row(conn: Connection, tenant_id: str, job_id: str) -> Row[Any] | None:
    """One job of one tenant as a plain row (attribute access like a ``Job``), read with
    Core: no ORM identity map or instance state. The polling path (``GET /v1/jobs/{id}``
    and the SSE stream) reads this way, on a connection held only for the one statement."""
    return conn.execute(_ONE_JOB, {"tenant_id": tenant_id, "job_id": job_id}).first()
