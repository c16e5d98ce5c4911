"""The edge owns the transaction: the unit of work commits once the route has returned, then
runs its after-commit hooks; on an error it rolls back and runs its after-rollback hooks."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api.deps import UoW
from core.db import UnitOfWork, get_engine, get_sessionmaker
from models import Tenant, new_id
from models.keys import ensure_tenant


def _tenant_exists(name: str) -> bool:
    with get_engine().connect() as conn:
        found = conn.execute(text("SELECT 1 FROM tenants WHERE name = :n"), {"n": name})
        return found.first() is not None


@pytest.fixture
def app(db: str) -> FastAPI:
    app = FastAPI()
    seen: list[str] = []
    app.state.seen = seen

    @app.post("/ok/{name}")
    def ok(name: str, uow: UoW) -> dict[str, Any]:
        ensure_tenant(uow.session, name)
        uow.after_commit(lambda: seen.append(f"committed {name}: {_tenant_exists(name)}"))
        uow.after_rollback(lambda: seen.append("rolled back"))
        return {"visible_before_commit": _tenant_exists(name)}

    @app.post("/fail/{name}")
    def fail(name: str, uow: UoW) -> None:
        ensure_tenant(uow.session, name)
        uow.after_commit(lambda: seen.append("committed"))
        uow.after_rollback(lambda: seen.append("rolled back"))
        raise RuntimeError("the route failed after writing")

    return app


def test_commit_happens_after_the_route_and_before_the_hooks(app: FastAPI) -> None:
    with TestClient(app) as client:
        resp = client.post("/ok/t-commit")
        assert resp.status_code == 200
        assert resp.json() == {"visible_before_commit": False}  # services only flush
    assert _tenant_exists("t-commit")
    assert app.state.seen == ["committed t-commit: True"]


def test_a_failing_route_rolls_back_and_runs_the_rollback_hooks(app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/fail/t-rollback").status_code == 500
    assert not _tenant_exists("t-rollback")
    assert app.state.seen == ["rolled back"]


def test_a_failed_commit_runs_the_rollback_hooks_not_the_commit_hooks(db: str) -> None:
    with get_sessionmaker()() as first:
        ensure_tenant(first, "t-dup")
        first.commit()
    uow = UnitOfWork(get_sessionmaker()())
    uow.session.add(Tenant(id=new_id("ten"), name="t-dup"))  # flushed only by the commit
    seen: list[str] = []
    uow.after_commit(lambda: seen.append("committed"))
    uow.after_rollback(lambda: seen.append("rolled back"))
    with pytest.raises(IntegrityError):
        uow.finish()
    assert seen == ["rolled back"]
