from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.errors import RETRY_AFTER_S, ServiceUnavailable, problem_response
from api.jsonbody import CheckedJsonRoute
from api.openapi import problems
from api.publisher import broker_ready
from core.db import get_engine
from core.errors import ErrorCode
from core.heartbeat import live_workers
from core.settings import get_settings

router = APIRouter(tags=["health"], route_class=CheckedJsonRoute)


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


def _workers() -> dict[str, Any]:
    """Live workers and the queues they consume. Informational: the API serves (and queues
    work) without them, so they never make the probe fail."""
    try:
        items = live_workers(get_settings())
    except Exception as exc:  # the probe reports any failure; it never raises
        return {"status": f"unknown: {type(exc).__name__}: {exc}", "items": []}
    queues = sorted({q for item in items for q in item["queues"]})
    status = "ok" if items else "no live worker"
    return {"status": status, "queues": queues, "items": items}


@router.get(
    "/readyz",
    summary="Readiness: the database and the broker answer",
    responses=problems(ErrorCode.SERVICE_UNAVAILABLE),
    description="503 names what failed. `workers` lists the live workers (heartbeats younger "
    "than three heartbeat periods) and their queues; it never fails the probe.",
)
async def readyz() -> JSONResponse:
    db_ok, db_detail = await run_in_threadpool(_database_ready)
    broker_ok, broker_detail = await run_in_threadpool(broker_ready)
    workers = await run_in_threadpool(_workers) if broker_ok else {"status": "unknown", "items": []}
    checks = {"database": db_detail, "broker": broker_detail}
    if db_ok and broker_ok:
        return JSONResponse({"status": "ok", "checks": checks, "workers": workers})
    failed = [name for name, ok in (("database", db_ok), ("broker", broker_ok)) if not ok]
    unavailable = ServiceUnavailable(f"not ready: {', '.join(failed)} unavailable")
    return problem_response(
        unavailable.status,
        unavailable.title,
        unavailable.detail,
        type_=unavailable.type,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extra={"failed": failed, "checks": checks, "workers": workers},
    )
