from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.publisher import broker_ready
from core.db import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process runs")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_ready() -> tuple[bool, str]:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True, "ok"
    except Exception as exc:  # the probe reports any failure; it never raises
        return False, f"{type(exc).__name__}: {exc}"


@router.get("/readyz", summary="Readiness: the database and the broker answer")
async def readyz() -> JSONResponse:
    db_ok, db_detail = await run_in_threadpool(_database_ready)
    broker_ok, broker_detail = await run_in_threadpool(broker_ready)
    checks = {"database": db_detail, "broker": broker_detail}
    if db_ok and broker_ok:
        return JSONResponse({"status": "ok", "checks": checks})
    failed = [name for name, ok in (("database", db_ok), ("broker", broker_ok)) if not ok]
    return JSONResponse({"status": "unavailable", "failed": failed, "checks": checks}, 503)
