"""Celery tasks: thin wrappers that pass ids to the services that do the work."""

from __future__ import annotations

import ctypes
import signal

from celery.signals import worker_process_init, worker_ready

from core.queue import (
    TASK_REQUEUE_STALE,
    TASK_RUN_JOB,
    TASK_VALIDATE_DATASET,
    TASK_VALIDATE_TEACHER,
)
from worker import pipeline, validation
from worker.celery_app import app
from worker.sandbox import PR_SET_PDEATHSIG

TRANSIENT = pipeline.TRANSIENT


@app.task(
    name=TASK_VALIDATE_TEACHER,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def validate_teacher(teacher_id: str) -> None:
    validation.validate_teacher(teacher_id)


@app.task(
    name=TASK_VALIDATE_DATASET,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def validate_dataset(dataset_id: str) -> None:
    validation.validate_dataset(dataset_id)


@app.task(
    name=TASK_RUN_JOB,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=5,
)
def run_job(job_id: str) -> None:
    pipeline.run_job(job_id)


@app.task(name=TASK_REQUEUE_STALE, ignore_result=True)
def requeue_stale() -> int:
    return pipeline.requeue_stale(lambda job_id: run_job.apply_async(args=[job_id]))


@worker_process_init.connect
def _die_with_the_worker(**_: object) -> None:
    """A pool process must not outlive its worker: an orphan would keep a GPU busy and
    race the attempt that takes the job over."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@worker_ready.connect
def _reclaim_orphans(**_: object) -> None:
    pipeline.reclaim_orphans(lambda job_id: run_job.apply_async(args=[job_id]))
