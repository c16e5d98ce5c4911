"""Request dependencies: the unit of work (the edge owns the transaction) and the tenant."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import Unauthorized
from core.db import get_sessionmaker
from core.keys import hash_key
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


def get_uow() -> Iterator[UnitOfWork]:
    session = get_sessionmaker()()
    try:
        yield UnitOfWork(session)
    finally:
        session.rollback()  # a no-op after commit; undoes whatever the route left uncommitted
        session.close()


UoW = Annotated[UnitOfWork, Depends(get_uow)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <api key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def current_tenant_id(request: Request) -> str:
    token = _bearer(request)
    session = get_sessionmaker()()
    try:
        tenant = ApiKeyRepository(session).tenant_for_hash(hash_key(token))
    finally:
        session.close()
    if tenant is None:
        raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return tenant.id


TenantId = Annotated[str, Depends(current_tenant_id)]
