"""The yardsticks of bench/api_load.py, served exactly like the API (``api.serve``'s uvicorn
configuration and protocol): ``python -m bench._bare_app --port N``.

- ``GET /bare/jobs/{id}``: the same single-row read as ``GET /v1/jobs/{id}`` (``SELECT`` of
  the job by id) through core.db's engine, pool and settings, in the same threadpool,
  without auth, tenancy or response schemas.
- ``POST /bare/drain``: reads the request's body to its end and drops it: what receiving an
  upload costs the server before any parsing, hashing or writing.
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


async def drain(request: Request) -> Response:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return Response(json.dumps({"bytes": size}), status_code=201, media_type="application/json")


app = Starlette(
    routes=[
        Route("/bare/jobs/{job_id}", read_job),
        Route("/bare/drain", drain, methods=["POST"]),
    ]
)


def main() -> None:
    import argparse

    import uvicorn

    from api.serve import uvicorn_config

    parser = argparse.ArgumentParser(prog="python -m bench._bare_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn_config(
        "bench._bare_app:app", factory=False, host="127.0.0.1", port=args.port, log_level="warning"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
