"""Per-tenant quotas (settings): concurrent active jobs (429) and stored bytes (413)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import TooLarge, TooManyRequests
from core.settings import get_settings
from models.usage_repository import UsageRepository

# A job's end cannot be predicted: a client is asked to come back after this long.
ACTIVE_JOBS_RETRY_AFTER_S = 30


def hold_tenant(session: Session, tenant_id: str) -> None:
    """From here to the commit, this tenant's quota checks run one request at a time (the
    tenant's row lock; on SQLite the database's write lock). First in the transaction."""
    UsageRepository(session).lock_tenant(tenant_id)


def check_active_jobs(session: Session, tenant_id: str) -> None:
    """The caller holds the tenant (``hold_tenant``) until the submit commits."""
    limit = get_settings().max_active_jobs
    if limit <= 0:
        return
    if UsageRepository(session).active_jobs(tenant_id) >= limit:
        raise TooManyRequests(
            f"this tenant already has {limit} queued or running jobs (the limit): "
            "submit again when one has ended",
            headers={"Retry-After": str(ACTIVE_JOBS_RETRY_AFTER_S)},
        )


def check_stored_bytes(
    session: Session, tenant_id: str, incoming: int, *, lock: bool = True
) -> None:
    """``incoming`` bytes more would go over the tenant's stored-bytes quota: 413. With
    ``lock``, the tenant's row is held until the upload's row commits."""
    limit = get_settings().max_stored_bytes
    if limit <= 0:
        return
    usage = UsageRepository(session)
    if lock:
        usage.lock_tenant(tenant_id)
    used = usage.stored_bytes(tenant_id)
    if used + incoming > limit:
        raise TooLarge(
            f"storing {incoming} more bytes would go over this tenant's quota of {limit} bytes "
            f"({used} in use): delete teachers or datasets first"
        )
