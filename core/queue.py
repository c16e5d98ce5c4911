"""Broker configuration shared by the API (publisher) and the worker (consumer).

Plain dicts only: core never imports celery. Messages carry ids as JSON, never pickles.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings

VALIDATE_QUEUE = "validate"
GPU_QUEUE = "gpu"
# Celery's soft limit comes this long after a job's own deadline (job_soft_time_limit_s).
SOFT_LIMIT_MARGIN_S = 30

TASK_VALIDATE_TEACHER = "stillhouse.validate_teacher"
TASK_VALIDATE_DATASET = "stillhouse.validate_dataset"
TASK_RUN_JOB = "stillhouse.run_job"
TASK_REQUEUE_STALE = "stillhouse.requeue_stale"
TASK_DELIVER_WEBHOOKS = "stillhouse.deliver_webhooks"

ROUTES = {
    TASK_VALIDATE_TEACHER: VALIDATE_QUEUE,
    TASK_VALIDATE_DATASET: VALIDATE_QUEUE,
    TASK_REQUEUE_STALE: VALIDATE_QUEUE,
    TASK_DELIVER_WEBHOOKS: VALIDATE_QUEUE,
    TASK_RUN_JOB: GPU_QUEUE,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any]
    if settings.embedded_broker:
        folder = settings.broker_dir / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        control = settings.broker_dir / "control"  # kombu's default is ./control (the cwd)
        control.mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(control),
            "store_processed": False,
            # kombu polls the folder once a second by default: up to 1 s before a worker
            # sees a new job. A listdir every 0.1 s costs the idle workers next to nothing.
            "polling_interval": 0.1,
        }
    else:
        # Redis redelivers an unacked message after this long: above the longest job,
        # or a healthy long job would run twice (the lease fences it, but it wastes a GPU).
        transport_options = {"visibility_timeout": settings.job_hard_time_limit_s + 3600}
        if settings.broker_key_prefix:
            transport_options["global_keyprefix"] = settings.broker_key_prefix
    extra: dict[str, Any] = {}
    if settings.embedded_broker:
        extra["broker_transport"] = "core.fsbroker:Transport"
    return {
        **extra,
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_routes": {name: {"queue": queue} for name, queue in ROUTES.items()},
        "task_default_queue": VALIDATE_QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A job's run keeps its own deadline (worker/pipeline.py, PastTimeLimit) and ends
        # itself there; Celery's signal comes later, only as the backstop.
        "task_soft_time_limit": settings.job_soft_time_limit_s + SOFT_LIMIT_MARGIN_S,
        "task_time_limit": settings.job_hard_time_limit_s,
        "worker_hijack_root_logger": False,
    }
