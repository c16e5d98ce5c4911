"""Request dependencies: the unit of work (the edge owns the transaction) and the tenant.

Both are ``async`` on purpose: FastAPI runs every sync dependency in the threadpool, one hop
each way, and neither needs a thread unless it touches the database. A request's database
work happens in the route's own thread; only the release of its connection (a rollback after
reads) takes one more hop, and a key lookup that misses the cache one more checkout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import Unauthorized
from core.db import get_sessionmaker
from core.keys import hash_key
from core.logs import set_log_context
from models.repositories import ApiKeyRepository


@dataclass
class UnitOfWork:
    """A session plus work to do once its transaction has committed (publishing tasks)."""

    session: Session
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, fn: Callable[[], None]) -> None:
        self._after_commit.append(fn)

    def commit(self) -> None:
        self.session.commit()
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()


def _release(session: Session) -> None:
    session.rollback()  # a no-op after commit; undoes whatever the route left uncommitted
    session.close()


async def get_uow() -> AsyncIterator[UnitOfWork]:
    session = get_sessionmaker()()  # no I/O: a connection is checked out on first use
    try:
        yield UnitOfWork(session)
    finally:
        if session.in_transaction():  # holds a pooled connection: roll back off the loop
            await run_in_threadpool(_release, session)
        else:
            session.close()


UoW = Annotated[UnitOfWork, Depends(get_uow)]


class KeyCache:
    """Recent successful key lookups (sha256 of the key → tenant id), per API process.

    Entries live ``ttl`` seconds (``STILLHOUSE_AUTH_CACHE_SECONDS``; 0 turns the cache off),
    so a revoked key stops working within that time. Unknown keys are never cached.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> str | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, tenant_id: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[1] >= now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key_hash] = (tenant_id, time.monotonic() + self.ttl)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <api key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def _tenant_for(session: Session, key_hash: str) -> str:
    tenant_id = ApiKeyRepository(session).tenant_id_for_hash(key_hash)
    if tenant_id is None:
        raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return tenant_id


def _own_session_lookup(key_hash: str) -> str:
    with get_sessionmaker()() as session:
        return _tenant_for(session, key_hash)


async def _cached(request: Request, lookup: Callable[[str], str]) -> str:
    key_hash = hash_key(_bearer(request))
    cache: KeyCache = request.app.state.key_cache
    tenant_id = cache.get(key_hash)
    if tenant_id is None:
        tenant_id = await run_in_threadpool(lookup, key_hash)
        cache.put(key_hash, tenant_id)
    set_log_context(tenant_id=tenant_id)  # this request's log lines carry it from here on
    return tenant_id


def _lookup_and_release(session: Session, key_hash: str) -> str:
    try:
        return _tenant_for(session, key_hash)
    finally:
        # Release the connection at once: an upload route streams for minutes before it
        # touches the database again and must not sit "idle in transaction" meanwhile.
        session.rollback()


async def current_tenant_id(request: Request, uow: UoW) -> str:
    """On a cache miss the lookup runs in the request's own session (FastAPI hands the route
    the same cached UnitOfWork), which gives its connection back right after."""
    return await _cached(request, lambda key_hash: _lookup_and_release(uow.session, key_hash))


async def standalone_tenant_id(request: Request) -> str:
    """For routes without a UnitOfWork (job polling, event streams): on a cache miss, a
    short session of its own, closed before the route runs (a stream never holds it)."""
    return await _cached(request, _own_session_lookup)


TenantId = Annotated[str, Depends(current_tenant_id)]
StandaloneTenantId = Annotated[str, Depends(standalone_tenant_id)]
