"""API keys: create (shown once), list, revoke. Admin keys only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import AdminKey, KeyCache, UoW
from api.errors import BadRequest
from api.schemas import KeyCreate, KeyCreated, KeyRead, Page
from api.services import keys as service
from models.pagination import BadCursor
from models.repositories import ApiKeyRepository

router = APIRouter(prefix="/v1", tags=["keys"])


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
    try:
        items, nxt = ApiKeyRepository(uow.session).list_for_tenant(
            principal.tenant_id, limit=limit, cursor=cursor
        )
    except BadCursor as exc:
        raise BadRequest(str(exc)) from exc
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
    cache.discard(key_hash)  # at once in this process; others within their cache time
    return Response(status_code=204)
