"""Request dependencies: the unit of work (``core.db.UnitOfWork``: the edge owns the
transaction) and the tenant.

Both are ``async`` on purpose: FastAPI runs every sync dependency in the threadpool, one hop
each way, and neither needs a thread unless it touches the database. A request's database
work happens in the route's own thread; only the end of its transaction (the commit) takes
one more hop, and a key lookup that misses the cache one more checkout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import (
    Principal,
    authorize,
    count_failed_auth,
    refuse_failing_client,
    require,
)
from api.errors import Unauthorized
from core.db import UnitOfWork, get_sessionmaker, session_scope
from core.keys import Scope, hash_key
from core.logs import set_log_context
from models import utcnow
from models.repositories import ApiKeyRepository

# last_used_at is written at most this often per key and process (a lookup is a read).
LAST_USED_RESOLUTION_S = 60.0


async def get_uow() -> AsyncIterator[UnitOfWork]:
    session = get_sessionmaker()()  # no I/O: a connection is checked out on first use
    uow = UnitOfWork(session)
    try:
        yield uow
    except BaseException:
        if session.in_transaction() or uow._after_rollback:
            await run_in_threadpool(uow.abort)  # holds a pooled connection: off the loop
        else:
            session.close()
        raise
    if session.in_transaction() or uow._after_commit:
        await run_in_threadpool(uow.finish)
    else:
        session.close()


# scope="function": the commit happens before the response is sent, so a client that reads
# right after a 201 finds the row, and a failed commit is the request's error.
UoW = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


class KeyCache:
    """Recent successful key lookups (sha256 of the key → principal), per API process.

    Entries live ``ttl`` seconds (``STILLHOUSE_AUTH_CACHE_SECONDS``; 0 turns the cache off),
    so a revoked key stops working within that time. Unknown keys are never cached.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[1] >= now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key_hash] = (principal, time.monotonic() + self.ttl)

    def discard(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <api key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def _principal_for(session: Session, key_hash: str) -> Principal:
    row = ApiKeyRepository(session).live_by_hash(key_hash)
    if row is None:
        raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
    now = utcnow()
    if (
        row.last_used_at is None
        or (now - row.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S
    ):
        with session_scope() as own:  # its own short transaction: the lookup only reads
            ApiKeyRepository(own).touch(row.id, now)
    return Principal(key_id=row.id, tenant_id=row.tenant_id, scope=Scope(row.scope))


def _own_session_lookup(key_hash: str) -> Principal:
    with get_sessionmaker()() as session:
        return _principal_for(session, key_hash)


async def _cached(request: Request, lookup: Callable[[str], Principal]) -> Principal:
    key_hash = hash_key(_bearer(request))
    cache: KeyCache = request.app.state.key_cache
    principal = cache.get(key_hash)
    if principal is None:
        await refuse_failing_client(request)
        try:
            principal = await run_in_threadpool(lookup, key_hash)
        except Unauthorized:
            await count_failed_auth(request)
            raise
        cache.put(key_hash, principal)
    # This request's log lines carry the tenant, and the job its path names.
    set_log_context(tenant_id=principal.tenant_id, job_id=request.path_params.get("job_id"))
    await authorize(request, principal)
    return principal


def _lookup_and_release(session: Session, key_hash: str) -> Principal:
    try:
        return _principal_for(session, key_hash)
    finally:
        # Release the connection at once: an upload route streams for minutes before it
        # touches the database again and must not sit "idle in transaction" meanwhile.
        session.rollback()


async def current_principal(request: Request, uow: UoW) -> Principal:
    """On a cache miss the lookup runs in the request's own session (FastAPI hands the route
    the same cached UnitOfWork), which gives its connection back right after."""
    return await _cached(request, lambda key_hash: _lookup_and_release(uow.session, key_hash))


async def current_tenant_id(principal: Annotated[Principal, Depends(current_principal)]) -> str:
    return principal.tenant_id


async def standalone_tenant_id(request: Request) -> str:
    """For routes without a UnitOfWork (job polling, event streams): on a cache miss, a
    short session of its own, closed before the route runs (a stream never holds it)."""
    return (await _cached(request, _own_session_lookup)).tenant_id


TenantId = Annotated[str, Depends(current_tenant_id)]
StandaloneTenantId = Annotated[str, Depends(standalone_tenant_id)]
CurrentKey = Annotated[Principal, Depends(current_principal)]


async def admin_key(principal: CurrentKey) -> Principal:
    """Managing keys and webhooks takes an ``admin`` key."""
    require(principal, Scope.ADMIN)
    return principal


AdminKey = Annotated[Principal, Depends(admin_key)]
