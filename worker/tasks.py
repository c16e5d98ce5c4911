"""Celery tasks: thin wrappers that pass ids to the services that do the work."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from core.queue import TASK_VALIDATE_DATASET, TASK_VALIDATE_TEACHER
from worker import validation
from worker.celery_app import app

TRANSIENT = (OperationalError, OSError)


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
