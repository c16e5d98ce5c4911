"""``GET /metrics``: Prometheus text. Requests and upload bytes counted here; stage durations
and webhook deliveries by the workers (same multiprocess folder); jobs by status and queue
depth read at scrape time from the database and the broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import get_args

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import JobStatus
from core.db import get_sessionmaker
from core.metrics import enable_multiprocess
from core.queue import ROUTES
from core.settings import get_settings
from models.usage_repository import UsageRepository

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STATUSES = get_args(JobStatus)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "stillhouse_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
        )
        self.latency = Histogram(
            "stillhouse_http_request_duration_seconds",
            "Time to the response's first byte, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
        )
        self.upload_bytes = Counter(
            "stillhouse_upload_bytes_total", "Bytes of accepted uploads", ["kind"]
        )


@lru_cache(maxsize=1)
def request_metrics() -> RequestMetrics:
    enable_multiprocess(get_settings())
    return RequestMetrics()


def count_upload(kind: str, size_bytes: int) -> None:
    request_metrics().upload_bytes.labels(kind=kind).inc(size_bytes)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", None) or "<unmatched>")


def _method(scope: Scope) -> str:
    method = str(scope["method"])
    return method if method in METHODS else "other"  # a client's made-up verb is no label


class MetricsMiddleware:
    """Counts every HTTP request by its route template (``/v1/jobs/{job_id}``, never the
    id itself, so the number of series stays bounded) and times it to the first byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_time(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                metrics = request_metrics()
                metrics.latency.labels(_method(scope), _route(scope)).observe(
                    time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, send_and_time)
        finally:
            request_metrics().requests.labels(
                _method(scope), _route(scope), str(status["code"])
            ).inc()


class StateCollector(Collector):
    """Read at scrape time: jobs by status (all tenants) and messages waiting per queue."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # A database or broker outage leaves its family out; the scrape still answers.
        try:
            with get_sessionmaker()() as session:
                counts = UsageRepository(session).jobs_by_status()
        except SQLAlchemyError as exc:
            log.warning("metrics: jobs by status left out (%s)", type(exc).__name__)
        else:
            jobs = GaugeMetricFamily("stillhouse_jobs", "Jobs by status", labels=["status"])
            for status in STATUSES:
                jobs.add_metric([status], counts.get(status, 0))
            yield jobs
        try:
            depths = queue_depths()
        except (RedisError, OSError) as exc:
            log.warning("metrics: queue depth left out (%s)", type(exc).__name__)
            return
        depth = GaugeMetricFamily(
            "stillhouse_queue_depth", "Messages waiting in each broker queue", labels=["queue"]
        )
        for queue, size in depths.items():
            depth.add_metric([queue], size)
        yield depth


def queue_depths() -> dict[str, int]:
    settings = get_settings()
    queues = sorted(set(ROUTES.values()))
    if settings.redis_url:
        from redis import Redis

        client = Redis.from_url(settings.redis_url, socket_timeout=2.0)
        prefix = settings.broker_key_prefix
        try:
            return {
                q: sum(int(client.llen(prefix + key)) for key in _redis_lists(q)) for q in queues
            }
        finally:
            client.close()
    folder = settings.broker_dir / "queue"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return {q: sum(name.endswith(f".{q}.msg") for name in names) for q in queues}


def _redis_lists(queue: str) -> list[str]:
    """kombu's Redis lists of a queue: one per priority step, the default one unsuffixed."""
    return [queue, *(f"{queue}\x06\x16{priority}" for priority in (3, 6, 9))]


def registry() -> CollectorRegistry:
    request_metrics()  # this process's metrics exist (and the folder) before the first scrape
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
    reg.register(StateCollector())
    return reg


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    summary="Prometheus metrics (text exposition format)",
)
def metrics() -> Response:
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    request_metrics()
    app.add_middleware(MetricsMiddleware)
    app.include_router(router)
