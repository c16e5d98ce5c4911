"""The yardstick of bench/api_load.py: a bare Starlette endpoint doing the same single-row
read as ``GET /v1/jobs/{id}`` (``SELECT`` of the job by id) through core.db's engine, pool
and settings, in the same threadpool, without auth, tenancy or response schemas.

Served by uvicorn exactly like the API: ``uvicorn bench._bare_app:app``. No ``main``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.db import get_engine

SELECT_JOB = text("SELECT * FROM jobs WHERE id = :id")


def _read(job_id: str) -> dict[str, Any] | None:
    with get_engine().connect() as conn:
        row = conn.execute(SELECT_JOB, {"id": job_id}).mappings().first()
    return None if row is None else dict(row)


async def read_job(request: Request) -> Response:
    row = await run_in_threadpool(_read, request.path_params["job_id"])
    if row is None:
        return Response(status_code=404)
    return Response(json.dumps(row, default=str), media_type="application/json")


app = Starlette(routes=[Route("/bare/jobs/{job_id}", read_job)])
