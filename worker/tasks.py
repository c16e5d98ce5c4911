"""Celery tasks: thin wrappers that pass ids to the services that do the work."""

from __future__ import annotations

import ctypes
import logging
import signal

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down

from core.queue import (
    GPU_QUEUE,
    ROUTES,
    TASK_DELIVER_WEBHOOKS,
    TASK_REQUEUE_STALE,
    TASK_RUN_JOB,
    TASK_VALIDATE_DATASET,
    TASK_VALIDATE_TEACHER,
    VALIDATE_QUEUE,
)
from core.settings import get_settings
from models.outbox import drain
from worker import pipeline, shutdown, validation, webhooks
from worker.celery_app import app
from worker.sandbox import PR_SET_PDEATHSIG

log = logging.getLogger(__name__)

TRANSIENT = pipeline.TRANSIENT
# Transient faults (database, broker, storage away for a while) retry with backoff.
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "max_retries": 5}


@app.task(name=TASK_VALIDATE_TEACHER, retry_backoff_max=60, **RETRY)
def validate_teacher(teacher_id: str) -> None:
    validation.validate_teacher(teacher_id)


@app.task(name=TASK_VALIDATE_DATASET, retry_backoff_max=60, **RETRY)
def validate_dataset(dataset_id: str) -> None:
    validation.validate_dataset(dataset_id)


@app.task(name=TASK_RUN_JOB, retry_backoff_max=120, **RETRY)
def run_job(job_id: str) -> None:
    pipeline.run_job(job_id)
    try:
        deliver_webhooks.apply_async()  # the job's events now, not at the next sweep
    except Exception:  # the sweep delivers them anyway; the job's outcome stands
        log.warning("could not publish the webhook delivery task", exc_info=True)


@app.task(name=TASK_DELIVER_WEBHOOKS, ignore_result=True)
def deliver_webhooks() -> int:
    return webhooks.deliver_due()


@app.task(name=TASK_REQUEUE_STALE, ignore_result=True)
def requeue_stale() -> int:
    """The periodic sweep: re-publish stale jobs and validations, and what the outbox still
    holds (tasks whose publishing failed after their commit, e.g. while the broker was away)."""
    published = drain(_publish_entry, min_age_s=get_settings().outbox_drain_seconds)
    published += validation.requeue_stale(_publish_validation)
    return pipeline.requeue_stale(_publish_run) + published


def _publish_entry(task_name: str, args: list[str]) -> None:
    app.send_task(task_name, args=args, queue=ROUTES[task_name])


def _publish_validation(kind: validation.Kind, upload_id: str) -> None:
    task = validate_teacher if kind == "teacher" else validate_dataset
    task.apply_async(args=[upload_id])


def _publish_run(job_id: str) -> None:
    run_job.apply_async(args=[job_id])


@worker_process_init.connect
def _die_with_the_worker(**_: object) -> None:
    """A pool process must not outlive its worker: an orphan would keep a GPU busy and
    race the attempt that takes the job over. A pool process also starts its spare sandbox
    children here (a job worker's, a validate worker's), so that the first job does not wait
    for torch to import, nor the first upload for a new interpreter."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    shutdown.pool_process_started()
    if _consumes(GPU_QUEUE):
        pipeline.SPARE.start()
    if _consumes(VALIDATE_QUEUE):
        for spare in validation.SPARES.values():
            spare.start()


def _consumes(queue: str) -> bool:
    selected = app.amqp.queues.consume_from  # what -Q chose, else the app's default queues
    return not selected or queue in selected


@worker_ready.connect
def _reclaim_orphans(**_: object) -> None:
    pipeline.reclaim_orphans(_publish_run)


@worker_init.connect
def _clear_stop_marks(**_: object) -> None:
    shutdown.clear_marks(get_settings())


@worker_shutting_down.connect
def _hand_jobs_back(**_: object) -> None:
    """SIGTERM (warm shutdown): the running job checkpoints and goes back to the queue at
    once, instead of the worker waiting for it to end; the next worker resumes it."""
    shutdown.mark_stopping(get_settings())
