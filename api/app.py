"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.auth import close_rate_limiter
from api.deps import KeyCache
from api.docs import install_docs
from api.errors import install_error_handlers
from api.limits import BodyLimitMiddleware
from api.metrics import install_metrics
from api.openapi import install_openapi
from api.pages import install_pages
from api.publisher import drain_forever
from api.routes import health, jobs, keys, problems, students, uploads, webhooks
from core.db import session_scope
from core.logs import configure_logging
from core.settings import get_settings
from core.storage import remove_orphaned_partials
from models.keys import ensure_bootstrap_key

log = logging.getLogger(__name__)

DESCRIPTION = """
Stillhouse turns a big classifier into a small one that agrees with it.

1. Upload a **teacher** (ONNX or torch.export `.pt2`) and an unlabeled **transfer set**.
2. Submit a **job**; a GPU worker computes the teacher's soft labels and trains a student.
3. Poll the job (or stream its events), read the **report**, download the **student**.

Authenticate with `Authorization: Bearer <api key>`: press *Authorize*, paste the key, then
*Try it out* on any route. Errors are `application/problem+json`; each problem's `type` is a
page saying what its code means and what to do ([all error codes](/problems)).
"""


def _bootstrap() -> None:
    settings = get_settings()
    if settings.bootstrap_api_key:
        with session_scope() as session:
            ensure_bootstrap_key(session, settings.bootstrap_api_key)
    if not settings.storage_url:  # S3 aborts a failed multipart upload itself
        removed = remove_orphaned_partials(settings.storage_dir)
        if removed:
            log.info("removed %d partial uploads left by a stopped process", removed)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(_bootstrap)
    drainer = asyncio.create_task(drain_forever())
    try:
        yield
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        await close_rate_limiter(app)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Stillhouse",
        version="1.0.0",
        summary="Knowledge distillation as a service",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    settings = get_settings()
    configure_logging(settings.log_format)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    install_docs(app)
    install_pages(app)
    install_openapi(app)
    app.include_router(problems.router)
    app.include_router(health.router)
    app.include_router(uploads.router)
    app.include_router(jobs.router)
    app.include_router(students.router)
    app.include_router(keys.router)
    app.include_router(webhooks.router)
    install_metrics(app)
    return app
