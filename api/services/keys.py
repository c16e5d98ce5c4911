"""API keys of a tenant: create (the key shown once), list, revoke."""

from __future__ import annotations

from api.errors import NotFound
from core.db import UnitOfWork
from core.keys import Scope
from models import ApiKey, utcnow
from models.keys import add_key
from models.repositories import ApiKeyRepository


def create(uow: UnitOfWork, *, tenant_id: str, name: str, scope: str) -> tuple[ApiKey, str]:
    row, plain = add_key(uow.session, tenant_id=tenant_id, name=name, scope=Scope(scope))
    uow.session.flush()
    return row, plain


def revoke(uow: UnitOfWork, *, tenant_id: str, key_id: str) -> str:
    """Revoke a live key of the tenant; returns its hash (for this process's auth cache)."""
    keys = ApiKeyRepository(uow.session)
    row = keys.live_for_tenant(tenant_id, key_id)
    if row is None:
        raise NotFound(f"no key {key_id!r}")
    keys.revoke(row, utcnow())
    uow.session.flush()
    return row.key_hash


def list_keys(
    uow: UnitOfWork, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """One page of the tenant's live keys, newest first, and the cursor of the next."""
    return ApiKeyRepository(uow.session).list_for_tenant(tenant_id, limit=limit, cursor=cursor)
