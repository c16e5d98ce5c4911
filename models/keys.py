"""Tenants and their API keys as rows: tenants are made on first use, a key is stored as its
sha256 (``core.keys``) and shown once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.keys import Scope, generate_key, hash_key
from models.base import new_id
from models.repositories import ApiKeyRepository, TenantRepository
from models.tables import ApiKey, Tenant


def ensure_tenant(session: Session, name: str) -> Tenant:
    tenants = TenantRepository(session)
    return tenants.by_name(name) or tenants.add(Tenant(id=new_id("ten"), name=name))


def add_key(
    session: Session, *, tenant_id: str, name: str, scope: Scope, key: str | None = None
) -> tuple[ApiKey, str]:
    """Store a key for the tenant; returns the row and the plain key (shown once)."""
    plain = key or generate_key()
    row = ApiKeyRepository(session).add(
        ApiKey(
            id=new_id("key"),
            tenant_id=tenant_id,
            key_hash=hash_key(plain),
            prefix=plain[:8],
            name=name,
            scope=scope.value,
        )
    )
    return row, plain


def create_key(
    session: Session, *, tenant_name: str, key: str | None = None, name: str = ""
) -> str:
    """Store an admin key for the tenant (made if missing) and return the plain key, once."""
    tenant = ensure_tenant(session, tenant_name)
    return add_key(session, tenant_id=tenant.id, name=name, scope=Scope.ADMIN, key=key)[1]


def ensure_bootstrap_key(session: Session, key: str, tenant_name: str = "default") -> bool:
    """Make ``key`` a key of ``tenant_name``. Returns False when it already existed."""
    if ApiKeyRepository(session).by_hash(hash_key(key)) is not None:
        return False
    create_key(session, tenant_name=tenant_name, key=key)
    return True
