"""API keys: create (shown once), list, revoke. Admin keys only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import AdminKey, KeyCache, UoW
from api.jsonbody import CheckedJsonRoute
from api.schemas import KeyCreate, KeyCreated, KeyRead, Page
from api.services import keys as service

router = APIRouter(prefix="/v1", tags=["keys"], route_class=CheckedJsonRoute)


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key")
def create_key(body: KeyCreate, uow: UoW, principal: AdminKey) -> Any:
    row, plain = service.create(
        uow, tenant_id=principal.tenant_id, name=body.name, scope=body.scope
    )
    return {**KeyRead.model_validate(row).model_dump(), "key": plain}


@router.get("/keys", response_model=Page[KeyRead], summary="List live API keys, newest first")
def list_keys(
    uow: UoW,
    principal: AdminKey,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Any:
    items, nxt = service.list_keys(uow, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key (refused everywhere within the auth cache time)",
)
def revoke_key(key_id: str, request: Request, uow: UoW, principal: AdminKey) -> Response:
    key_hash = service.revoke(uow, tenant_id=principal.tenant_id, key_id=key_id)
    cache: KeyCache = request.app.state.key_cache
    # At once in this process (after the commit: a lookup in between would re-cache it);
    # others within their cache time.
    uow.after_commit(lambda: cache.discard(key_hash))
    return Response(status_code=204)
