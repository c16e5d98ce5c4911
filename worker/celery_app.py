"""The Celery application of the workers. JSON messages carrying ids; queues validate and gpu."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from core.logs import configure_logging, quiet_sweep
from core.queue import TASK_DELIVER_WEBHOOKS, TASK_REQUEUE_STALE, celery_config
from core.settings import get_settings


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("stillhouse", include=["worker.tasks", "worker.liveness"])
    app.conf.update(celery_config(settings))
    # Remote control (broadcast shutdown, pool_restart, ...) would let anyone who can write
    # to the broker stop or reconfigure the workers. Nothing here uses it.
    app.conf.worker_enable_remote_control = False
    app.conf.event_serializer = "json"
    app.conf.beat_schedule = {
        "requeue-stale-jobs": {"task": TASK_REQUEUE_STALE, "schedule": settings.sweep_seconds},
        # The webhook outbox: messages due for a (first or next) attempt.
        "deliver-webhooks": {"task": TASK_DELIVER_WEBHOOKS, "schedule": settings.sweep_seconds},
    }
    return app


def _log_format(logger: logging.Logger, **_: object) -> None:
    configure_logging(get_settings().log_format, logger)
    quiet_sweep(TASK_REQUEUE_STALE, TASK_DELIVER_WEBHOOKS)


after_setup_logger.connect(_log_format, weak=False)
after_setup_task_logger.connect(_log_format, weak=False)
app = create_celery()
