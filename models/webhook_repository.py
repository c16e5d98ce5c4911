"""Every statement about webhooks: subscriptions, the outbox and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from core.webhooks import EVENTS
from models.base import new_id, utcnow
from models.pagination import encode_cursor, newest_first, page
from models.tables import Job
from models.webhooks import Webhook, WebhookAttempt, WebhookMessage


class WebhookRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # subscriptions -----------------------------------------------------------------------
    def add(self, hook: Webhook) -> Webhook:
        self.session.add(hook)
        self.session.flush()
        return hook

    def get_for_tenant(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        stmt = select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
        return self.session.scalar(stmt)

    def get(self, webhook_id: str) -> Webhook | None:
        return self.session.get(Webhook, webhook_id)

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Webhook], str | None]:
        stmt = newest_first(
            select(Webhook).where(Webhook.tenant_id == tenant_id), Webhook, limit, cursor
        )
        return page(list(self.session.scalars(stmt)), limit)

    def delete(self, hook: Webhook) -> None:
        self.session.delete(hook)
        self.session.flush()

    # the outbox --------------------------------------------------------------------------
    def enqueue_job_event(self, job_id: str) -> int:
        """One message per endpoint of the job's tenant that subscribed to the job's (terminal)
        status, written in the caller's transaction: the status change and its events commit
        or roll back together. Returns how many were written."""
        job = self.session.execute(
            select(Job.tenant_id, Job.status, Job.error, Job.created_at, Job.finished_at).where(
                Job.id == job_id
            )
        ).first()
        event = f"job.{job.status}" if job is not None else ""
        if job is None or event not in EVENTS:
            return 0
        hooks = self.session.scalars(select(Webhook).where(Webhook.tenant_id == job.tenant_id))
        now = utcnow()
        payload = {
            "type": event,
            "timestamp": now.isoformat(),
            "data": {
                "id": job_id,
                "status": job.status,
                "error": job.error,
                "created_at": job.created_at.isoformat(),
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            },
        }
        count = 0
        for hook in hooks:
            if event in hook.events:
                self.session.add(
                    WebhookMessage(
                        id=new_id("msg"),
                        webhook_id=hook.id,
                        event=event,
                        job_id=job_id,
                        payload=payload,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                count += 1
        self.session.flush()
        return count

    def due(self, now: datetime, limit: int) -> list[str]:
        stmt = (
            select(WebhookMessage.id)
            .where(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now)
            .order_by(WebhookMessage.next_attempt_at)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def claim(self, message_id: str, now: datetime, hold_until: datetime) -> int | None:
        """Take a due message for one attempt; returns the attempt number.

        One conditional UPDATE: of two sweepers that found the same message due, one matches
        the row and moves ``next_attempt_at`` past the attempt's end; the other matches nothing.
        A sweeper that dies mid-attempt leaves the message due again at ``hold_until``.
        """
        stmt = (
            update(WebhookMessage)
            .where(
                WebhookMessage.id == message_id,
                WebhookMessage.status == "pending",
                WebhookMessage.next_attempt_at <= now,
            )
            .values(attempts=WebhookMessage.attempts + 1, next_attempt_at=hold_until)
            .returning(WebhookMessage.attempts)
        )
        attempt = self.session.scalar(stmt)
        self.session.flush()
        return attempt

    def message(self, message_id: str) -> WebhookMessage | None:
        return self.session.get(WebhookMessage, message_id)

    def record(
        self,
        message: WebhookMessage,
        attempt: WebhookAttempt,
        *,
        status: str,
        next_attempt_at: datetime | None,
    ) -> None:
        """Log one attempt and move the message on: delivered, failed, or due again later."""
        self.session.add(attempt)
        message.status = status
        if status == "delivered":
            message.delivered_at = attempt.created_at
        if next_attempt_at is not None:
            message.next_attempt_at = next_attempt_at
        self.session.flush()

    # the delivery log --------------------------------------------------------------------
    def attempts_for(
        self, webhook_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[WebhookAttempt, WebhookMessage]], str | None]:
        joined = cast(
            "Select[Any]",
            select(WebhookAttempt, WebhookMessage)
            .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
            .where(WebhookAttempt.webhook_id == webhook_id),
        )
        stmt = newest_first(joined, WebhookAttempt, limit, cursor)
        rows = [(a, m) for a, m in self.session.execute(stmt)]
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1][0]
        return rows[:limit], encode_cursor(last.created_at, last.id)
