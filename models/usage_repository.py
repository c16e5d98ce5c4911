"""What tenants hold now: for quotas, and for the metrics scrape."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import begin_serialized
from core.enums import ACTIVE
from models.tables import Job, StoredFile, Tenant


class UsageRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_tenant(self, tenant_id: str) -> None:
        """Hold the tenant's row until the transaction ends: two submits (or uploads) of one
        tenant check its quota one after the other, so both cannot pass on the last slot.
        FOR NO KEY UPDATE: rows that only reference the tenant (a worker's student files)
        are not held up. SQLite has no row locks and pysqlite reads outside the transaction
        until its first write (25 simultaneous submits passed a quota of 10): there the
        transaction must begin here, with the database's write lock (``begin_serialized``)."""
        begin_serialized(self.session)
        stmt = select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        self.session.execute(stmt)

    def active_jobs(self, tenant_id: str) -> int:
        stmt = select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
        return int(self.session.scalar(stmt) or 0)

    def stored_bytes(self, tenant_id: str) -> int:
        stmt = select(func.coalesce(func.sum(StoredFile.size_bytes), 0)).where(
            StoredFile.tenant_id == tenant_id
        )
        return int(self.session.scalar(stmt) or 0)

    def jobs_by_status(self) -> dict[str, int]:
        """Every tenant's jobs by status (the metrics scrape)."""
        stmt = select(Job.status, func.count()).group_by(Job.status)
        return {status: int(count) for status, count in self.session.execute(stmt)}
