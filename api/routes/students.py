from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import TenantId
from api.jsonbody import CheckedJsonRoute
from api.schemas import StudentArchitecture
from core.students import catalog

router = APIRouter(prefix="/v1", tags=["students"], route_class=CheckedJsonRoute)


@router.get(
    "/students",
    response_model=dict[str, list[StudentArchitecture]],
    summary="Student architectures the service can build",
)
def list_students(_: TenantId) -> Any:
    return {"items": catalog()}
