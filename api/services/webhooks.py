"""Webhook endpoints of a tenant: register (the secret shown once), list, delete, and the
delivery log. Deliveries themselves are the worker's (``worker/webhooks.py``)."""

from __future__ import annotations

from typing import Any

from api.errors import Invalid, NotFound
from core.db import UnitOfWork
from core.settings import get_settings
from core.webhooks import RefusedURL, check_url, new_secret
from models import Webhook, new_id
from models.webhook_repository import WebhookRepository


def create(uow: UnitOfWork, *, tenant_id: str, url: str, events: list[str]) -> Webhook:
    """Refuses at once what no delivery could reach: another scheme, an unresolvable host, an
    address that is not public (unless allowed). Deliveries check again (DNS may change)."""
    try:
        check_url(url, allow_private=get_settings().webhook_allow_private)
    except RefusedURL as exc:
        raise Invalid(f"url: {exc}", errors=[{"field": "url", "message": str(exc)}]) from exc
    hook = WebhookRepository(uow.session).add(
        Webhook(
            id=new_id("wh"),
            tenant_id=tenant_id,
            url=url,
            events=sorted(set(events)),
            secret=new_secret(),
        )
    )
    uow.session.flush()
    return hook


def get(uow: UnitOfWork, *, tenant_id: str, webhook_id: str) -> Webhook:
    hook = WebhookRepository(uow.session).get_for_tenant(tenant_id, webhook_id)
    if hook is None:
        raise NotFound(f"no webhook {webhook_id!r}")
    return hook


def delete(uow: UnitOfWork, *, tenant_id: str, webhook_id: str) -> None:
    """Its pending messages and its delivery log go with it."""
    WebhookRepository(uow.session).delete(get(uow, tenant_id=tenant_id, webhook_id=webhook_id))
    uow.session.flush()


def deliveries(
    uow: UnitOfWork, *, tenant_id: str, webhook_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    hook = get(uow, tenant_id=tenant_id, webhook_id=webhook_id)
    rows, nxt = WebhookRepository(uow.session).attempts_for(hook.id, limit=limit, cursor=cursor)
    items = [
        {
            "id": attempt.id,
            "message_id": message.id,
            "event": message.event,
            "job_id": message.job_id,
            "attempt": attempt.attempt,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "duration_ms": attempt.duration_ms,
            "created_at": attempt.created_at,
            "message_status": message.status,
            "next_attempt_at": message.next_attempt_at if message.status == "pending" else None,
        }
        for attempt, message in rows
    ]
    return items, nxt


def list_webhooks(
    uow: UnitOfWork, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Webhook], str | None]:
    """One page of the tenant's webhook endpoints, newest first, and the cursor of the next."""
    return WebhookRepository(uow.session).list_for_tenant(tenant_id, limit=limit, cursor=cursor)
