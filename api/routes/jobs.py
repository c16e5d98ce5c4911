"""Jobs: submit, list, read, cancel, delete, events (SSE or stored), metrics, report, student."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import headers
from api.deps import StandaloneTenantId, TenantId, UoW
from api.downloads import file_response
from api.errors import NotFound
from api.jsonbody import CheckedJsonRoute
from api.openapi import problems
from api.schemas import JobEventRead, JobRead, Metrics, Page
from api.services import jobs as service
from core.artifacts import Artifacts
from core.contracts import Report
from core.db import UnitOfWork
from core.enums import TERMINAL, ExportFormat, JobStatus
from core.errors import ErrorCode
from core.spec import JobSpec
from core.storage import get_storage

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=CheckedJsonRoute)

# What "Try it out" pre-fills: the ids alone. Everything else left out takes its default,
# some of which depend on the data (the epochs, MUNGE for small tabular sets); the schema
# below the example lists every field with its default.
EXAMPLE_JOB = {"teacher_ids": ["tch_..."], "dataset_id": "ds_..."}
SSE_POLL_S = 0.5
SSE_KEEPALIVE_S = 15.0


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobRead,
    summary="Submit a distillation job",
    responses={
        200: {"model": JobRead, "description": "Idempotency-Key replay"},
        **problems(ErrorCode.CONFLICT),
    },
)
def submit_job(
    uow: UoW,
    tenant_id: TenantId,
    response: Response,
    spec: Annotated[JobSpec, Body(examples=[EXAMPLE_JOB])],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    job, created = service.submit(
        uow, tenant_id=tenant_id, spec=spec, idempotency_key=idempotency_key
    )
    response.status_code = 201 if created else 200
    return service.job_view(job)


@router.get("/jobs", response_model=Page[JobRead], summary="List jobs, newest first")
def list_jobs(
    uow: UoW,
    tenant_id: TenantId,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Any:
    items, nxt = service.list_jobs(
        uow, tenant_id=tenant_id, status=status, limit=limit, cursor=cursor
    )
    return {"items": [service.job_view(j) for j in items], "next_cursor": nxt}


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(job_id: str, tenant_id: StandaloneTenantId) -> Any:
    # The polling path: one Core read in one thread hop, no session (models.job_repository).
    found = await run_in_threadpool(service.read_job_view, tenant_id, job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}")
    return found[1]


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    responses=problems(ErrorCode.CONFLICT),
)
def cancel_job(job_id: str, uow: UoW, tenant_id: TenantId) -> Any:
    return service.job_view(service.cancel(uow, tenant_id=tenant_id, job_id=job_id))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a finished job, its history and its students (409 while it is active)",
)
def delete_job(job_id: str, uow: UoW, tenant_id: TenantId) -> Response:
    service.delete(uow, get_storage(), tenant_id=tenant_id, job_id=job_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=Metrics,
    summary="One row per finished epoch (a resumed attempt's rows carry its attempt)",
)
def job_metrics(job_id: str, uow: UoW, tenant_id: TenantId) -> Any:
    return {"items": service.epochs(uow, tenant_id=tenant_id, job_id=job_id)}


@router.get("/jobs/{job_id}/report", response_model=Report)
def get_report(job_id: str, uow: UoW, tenant_id: TenantId) -> Any:
    job = service.get_job(uow, tenant_id=tenant_id, job_id=job_id)
    if job.status != JobStatus.SUCCEEDED or job.report is None:
        raise NotFound(f"job {job_id!r} has no report yet ({job.status})")
    return job.report


@router.head("/jobs/{job_id}/student", include_in_schema=False)
@router.get(
    "/jobs/{job_id}/student",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)"},
        304: {"description": "Not modified (If-None-Match)"},
        **problems(ErrorCode.RANGE_NOT_SATISFIABLE),
    },
    summary="Download the student (ETag = sha256, Range supported); a sweep's candidate N "
    "with candidate=N (default: the chosen one)",
)
def download_student(
    job_id: str,
    request: Request,
    uow: UoW,
    tenant_id: TenantId,
    format: Annotated[
        ExportFormat | Literal["tokenizer"],
        Query(description="a student format, or tokenizer: the teacher's tokenizer.json"),
    ] = ExportFormat.ONNX,
    candidate: Annotated[
        int | None,
        Query(ge=0, description="a sweep's candidate (the report's candidates[].index)"),
    ] = None,
) -> Response:
    job = service.get_job(uow, tenant_id=tenant_id, job_id=job_id)
    if format == "tokenizer":
        tokenizer = service.tokenizer_file(uow, tenant_id=tenant_id, job=job)
        if tokenizer is None:
            raise NotFound(f"job {job_id!r} has no tokenizer (its teacher came without one)")
        return file_response(request, tokenizer)
    succeeded = job.status == JobStatus.SUCCEEDED
    artifact = Artifacts.of(job.artifacts).find(format, candidate) if succeeded else None
    if artifact is None:
        which = "" if candidate is None else f" candidate {candidate}"
        raise NotFound(f"job {job_id!r} has no {format} student{which} ({job.status})")
    return file_response(request, artifact)


def _snapshot(tenant_id: str, job_id: str) -> dict[str, Any] | None:
    """One poll of the stream: a connection held for one statement, never for the stream."""
    found = service.read_job_view(tenant_id, job_id)
    if found is None:
        return None
    revision, view = found
    return {"revision": revision, "job": JobRead.model_validate(view).model_dump(mode="json")}


def _sse(event: str, event_id: int, data: dict[str, Any]) -> str:
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n"


EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Page[JobEventRead],
        "description": "`text/event-stream` by default; the stored events with "
        "`Accept: application/json`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def _stored_events(
    uow: UnitOfWork, tenant_id: str, job_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    items, nxt = service.events(uow, tenant_id=tenant_id, job_id=job_id, limit=limit, cursor=cursor)
    page = Page[JobEventRead](
        items=[JobEventRead.model_validate(e) for e in items], next_cursor=nxt
    )
    return page.model_dump(mode="json")


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses=EVENTS_RESPONSES,
    summary="Server-sent events (progress on every change, then a final status), or the "
    "stored events, oldest first, with Accept: application/json",
)
async def job_events(
    job_id: str,
    request: Request,
    tenant_id: StandaloneTenantId,
    uow: UoW,
    last_event_id: Annotated[str | None, Header()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        body = await run_in_threadpool(_stored_events, uow, tenant_id, job_id, limit, cursor)
        return JSONResponse(body)
    first = await run_in_threadpool(_snapshot, tenant_id, job_id)
    if first is None:
        raise NotFound(f"no job {job_id!r}")
    last = headers.last_event_id(last_event_id)

    async def stream() -> Any:
        nonlocal last
        snap: dict[str, Any] | None = first
        idle = 0.0
        yield "retry: 2000\n\n"
        while snap is not None:
            job = snap["job"]
            if job["status"] in TERMINAL:
                yield _sse("status", snap["revision"], job)
                return
            if snap["revision"] > last:
                last = snap["revision"]
                idle = 0.0
                yield _sse("progress", last, _progress(job))
            elif idle >= SSE_KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            idle += SSE_POLL_S
            snap = await run_in_threadpool(_snapshot, tenant_id, job_id)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _progress(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "status", "stage", "progress", "epoch", "epochs", "metrics", "attempt")
    return {k: job[k] for k in keys}
