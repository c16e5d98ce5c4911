"""Webhooks: register an endpoint (the signing secret shown once), list, delete, and read its
delivery log. Admin keys only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import AdminKey, UoW
from api.jsonbody import CheckedJsonRoute
from api.schemas import DeliveryRead, Page, WebhookCreate, WebhookCreated, WebhookRead
from api.services import webhooks as service

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=CheckedJsonRoute)

Limit = Annotated[int, Query(ge=1, le=200)]


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Register an endpoint for job events (Standard Webhooks signatures)",
)
def create_webhook(body: WebhookCreate, uow: UoW, principal: AdminKey) -> Any:
    return service.create(
        uow, tenant_id=principal.tenant_id, url=body.url, events=list(body.events)
    )


@router.get("/webhooks", response_model=Page[WebhookRead], summary="List endpoints, newest first")
def list_webhooks(
    uow: UoW, principal: AdminKey, limit: Limit = 50, cursor: str | None = None
) -> Any:
    items, nxt = service.list_webhooks(
        uow, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": nxt}


@router.get("/webhooks/{webhook_id}", response_model=WebhookRead, summary="Read an endpoint")
def get_webhook(webhook_id: str, uow: UoW, principal: AdminKey) -> Any:
    return service.get(uow, tenant_id=principal.tenant_id, webhook_id=webhook_id)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an endpoint (its pending deliveries are dropped)",
)
def delete_webhook(webhook_id: str, uow: UoW, principal: AdminKey) -> Response:
    service.delete(uow, tenant_id=principal.tenant_id, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Page[DeliveryRead],
    summary="The delivery log: one row per attempt, newest first",
)
def list_deliveries(
    webhook_id: str,
    uow: UoW,
    principal: AdminKey,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Any:
    items, nxt = service.deliveries(
        uow, tenant_id=principal.tenant_id, webhook_id=webhook_id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": nxt}
