"""Every SQL statement outside jobs lives here. Repositories flush; the edge commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from core.enums import ACTIVE, UploadStatus
from models.base import utcnow
from models.pagination import newest_first, page
from models.tables import (
    ApiKey,
    Dataset,
    Job,
    JobDataset,
    JobTeacher,
    StoredFile,
    Teacher,
    Tenant,
)

M = TypeVar("M", Teacher, Dataset)


class LiveKey(NamedTuple):
    id: str
    tenant_id: str
    scope: str
    last_used_at: datetime | None


class TenantRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_name(self, name: str) -> Tenant | None:
        return self.session.scalar(select(Tenant).where(Tenant.name == name))

    def add(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        self.session.flush()
        return tenant


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def live_by_hash(self, key_hash: str) -> LiveKey | None:
        """A live (unrevoked) key: one indexed row, no entity loaded."""
        stmt = select(ApiKey.id, ApiKey.tenant_id, ApiKey.scope, ApiKey.last_used_at).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
        )
        row = self.session.execute(stmt).first()
        return None if row is None else LiveKey(*row)

    def touch(self, key_id: str, now: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))

    def by_hash(self, key_hash: str) -> ApiKey | None:
        return self.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    def live_for_tenant(self, tenant_id: str, key_id: str) -> ApiKey | None:
        stmt = select(ApiKey).where(
            ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None)
        )
        return self.session.scalar(stmt)

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[ApiKey], str | None]:
        stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        return page(list(self.session.scalars(newest_first(stmt, ApiKey, limit, cursor))), limit)

    def revoke(self, key: ApiKey, now: datetime) -> None:
        key.revoked_at = now
        self.session.flush()

    def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        self.session.flush()
        return key


class StoredFileRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, stored: StoredFile) -> StoredFile:
        self.session.add(stored)
        self.session.flush()
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self.session.get(StoredFile, file_id)

    def delete(self, stored: StoredFile) -> None:
        self.session.delete(stored)
        self.session.flush()


class _UploadRepository(Generic[M]):
    model: type[M]

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: M) -> M:
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, id_: str) -> M | None:
        return self.session.get(self.model, id_)

    def get_for_tenant(self, tenant_id: str, id_: str) -> M | None:
        stmt = select(self.model).where(self.model.id == id_, self.model.tenant_id == tenant_id)
        return self.session.scalar(stmt)

    def get_many_for_tenant(self, tenant_id: str, ids: list[str]) -> dict[str, M]:
        stmt = select(self.model).where(self.model.id.in_(ids), self.model.tenant_id == tenant_id)
        return {row.id: row for row in self.session.scalars(stmt)}

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[M], str | None]:
        stmt = newest_first(
            select(self.model).where(self.model.tenant_id == tenant_id), self.model, limit, cursor
        )
        return page(list(self.session.scalars(stmt)), limit)

    def delete(self, row: M) -> None:
        self.session.delete(row)
        self.session.flush()

    def update(self, row: M, **values: Any) -> M:
        for name, value in values.items():
            setattr(row, name, value)
        self.session.flush()
        return row

    # validation's claim, fenced by its attempt, as a job's ----------------------------------
    def claim(self, id_: str, *, lease: timedelta, max_attempts: int) -> int | None:
        """Take the upload's validation if nobody holds it (no lease, or an expired one) and
        attempts are left. Returns the attempt.

        One conditional UPDATE: of two deliveries of the same message (a re-publish by the
        sweep and the original), one matches the row and the other does nothing."""
        now = utcnow()
        model = self.model
        stmt = (
            update(model)
            .where(
                model.id == id_,
                model.status == UploadStatus.VALIDATING,
                model.attempt < max_attempts,
                or_(model.lease_expires_at.is_(None), model.lease_expires_at < now),
            )
            .values(attempt=model.attempt + 1, lease_expires_at=now + lease, updated_at=now)
            .returning(model.attempt)
        )
        attempt = self.session.scalar(stmt)
        self.session.flush()
        return attempt

    def renew(self, id_: str, attempt: int, *, lease: timedelta) -> bool:
        return self._fenced(id_, attempt, lease_expires_at=utcnow() + lease)

    def finish(self, id_: str, attempt: int, **values: Any) -> bool:
        """Write the validation's outcome (``status`` and the metadata or the error) unless
        another attempt took the upload over or it ended meanwhile."""
        return self._fenced(id_, attempt, lease_expires_at=None, **values)

    def _fenced(self, id_: str, attempt: int, **values: Any) -> bool:
        model = self.model
        stmt = (
            update(model)
            .where(
                model.id == id_, model.attempt == attempt, model.status == UploadStatus.VALIDATING
            )
            .values(updated_at=utcnow(), **values)
        )
        done = bool(getattr(self.session.execute(stmt), "rowcount", 0))
        self.session.flush()
        return done

    def stale(self, now: datetime) -> list[M]:
        """Validations whose worker stopped renewing their lease (killed, or cut off)."""
        model = self.model
        stmt = select(model).where(
            model.status == UploadStatus.VALIDATING, model.lease_expires_at < now
        )
        return list(self.session.scalars(stmt))

    def unclaimed_since(self, cutoff: datetime) -> list[M]:
        """Validations no worker took since ``cutoff``: a message lost between its delivery
        and the claim (the embedded broker drops a message as it hands it out)."""
        model = self.model
        stmt = select(model).where(
            model.status == UploadStatus.VALIDATING,
            model.lease_expires_at.is_(None),
            model.updated_at < cutoff,
        )
        return list(self.session.scalars(stmt))

    def release(self, id_: str, attempt: int) -> bool:
        """An expired lease given up, so that a new delivery may claim it; the upload counts
        as unclaimed from now on (re-published again only after a long wait)."""
        return self._fenced(id_, attempt, lease_expires_at=None)


class TeacherRepository(_UploadRepository[Teacher]):
    model = Teacher

    def used_by_active_job(self, teacher_id: str) -> bool:
        stmt = select(
            exists()
            .where(JobTeacher.teacher_id == teacher_id)
            .where(JobTeacher.job_id == Job.id)
            .where(Job.status.in_(ACTIVE))
        )
        return bool(self.session.scalar(stmt))

    def detach_from_jobs(self, teacher_id: str) -> None:
        self.session.execute(delete(JobTeacher).where(JobTeacher.teacher_id == teacher_id))


class DatasetRepository(_UploadRepository[Dataset]):
    model = Dataset

    def used_by_active_job(self, dataset_id: str) -> bool:
        stmt = select(
            exists()
            .where(JobDataset.dataset_id == dataset_id)
            .where(JobDataset.job_id == Job.id)
            .where(Job.status.in_(ACTIVE))
        )
        return bool(self.session.scalar(stmt))

    def detach_from_jobs(self, dataset_id: str) -> None:
        self.session.execute(delete(JobDataset).where(JobDataset.dataset_id == dataset_id))
