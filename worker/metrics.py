"""The workers' Prometheus metrics, written to the shared multiprocess folder (core.metrics)
and served by the API's ``GET /metrics``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram

from core.metrics import enable_multiprocess
from core.settings import get_settings

STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.stage_seconds = Histogram(
            "stillhouse_job_stage_duration_seconds",
            "Seconds a succeeded job spent in each stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
        )
        self.webhook_attempts = Counter(
            "stillhouse_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            ["outcome"],
        )


@lru_cache(maxsize=1)
def worker_metrics() -> WorkerMetrics:
    enable_multiprocess(get_settings())
    return WorkerMetrics()


def observe_stages(report: dict[str, Any]) -> None:
    timings = report.get("timings_s") or {}
    for stage, seconds in timings.items():
        if isinstance(seconds, int | float) and seconds >= 0:
            worker_metrics().stage_seconds.labels(stage=stage).observe(float(seconds))


def count_webhook_attempt(status: str) -> None:
    outcome = {"pending": "retry"}.get(status, status)
    worker_metrics().webhook_attempts.labels(outcome=outcome).inc()
