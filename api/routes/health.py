from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.errors import RETRY_AFTER_S, ServiceUnavailable, problem_response
from api.openapi import problems
from api.publisher import broker_ready
from core.db import get_engine
from core.errors import ErrorCode

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


@router.get(
    "/readyz",
    summary="Readiness: the database and the broker answer",
    responses=problems(ErrorCode.SERVICE_UNAVAILABLE),
)
async def readyz() -> JSONResponse:
    db_ok, db_detail = await run_in_threadpool(_database_ready)
    broker_ok, broker_detail = await run_in_threadpool(broker_ready)
    checks = {"database": db_detail, "broker": broker_detail}
    if db_ok and broker_ok:
        return JSONResponse({"status": "ok", "checks": checks})
    failed = [name for name, ok in (("database", db_ok), ("broker", broker_ok)) if not ok]
    unavailable = ServiceUnavailable(f"not ready: {', '.join(failed)} unavailable")
    return problem_response(
        unavailable.status,
        unavailable.title,
        unavailable.detail,
        type_=unavailable.type,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extra={"failed": failed, "checks": checks},
    )
