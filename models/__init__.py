"""SQLAlchemy ORM classes (the database models) and the repositories that hold every query."""

from models.base import Base, new_id, utcnow
from models.outbox import TaskOutbox
from models.tables import (
    ApiKey,
    Dataset,
    Job,
    JobDataset,
    JobTeacher,
    StoredFile,
    Teacher,
    Tenant,
)
from models.webhooks import Webhook, WebhookAttempt, WebhookMessage

__all__ = [
    "ApiKey",
    "Base",
    "Dataset",
    "Job",
    "JobDataset",
    "JobTeacher",
    "StoredFile",
    "TaskOutbox",
    "Teacher",
    "Tenant",
    "Webhook",
    "WebhookAttempt",
    "WebhookMessage",
    "new_id",
    "utcnow",
]
