"""Teachers and datasets: upload, read, list, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import TenantId, UoW
from api.headers import small_int
from api.jsonbody import CheckedJsonRoute
from api.openapi import problems
from api.schemas import DatasetRead, Page, TeacherRead
from api.services import uploads
from core.errors import ErrorCode
from core.outputs import REQUESTED_OUTPUT_KINDS
from core.storage import get_storage

router = APIRouter(prefix="/v1", tags=["uploads"], route_class=CheckedJsonRoute)

Limit = Annotated[int, Query(ge=1, le=200)]

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}

UPLOAD_PROBLEMS = problems(ErrorCode.UNSUPPORTED_FORMAT, ErrorCode.STORAGE_FULL)


TEACHER_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string"},
                        "output_name": {
                            "type": "string",
                            "description": "the output that holds the class scores "
                            "(default: the one named logits, else the one float "
                            "[N, classes] output)",
                        },
                        "output_kind": {
                            "type": "string",
                            "enum": list(REQUESTED_OUTPUT_KINDS),
                            "default": "auto",
                            "description": "what that output holds; auto: decided by the "
                            "validation dry run",
                        },
                    },
                }
            }
        },
    }
}


def _length(request: Request) -> int | None:
    return small_int(request.headers.get("content-length"))


@router.post(
    "/teachers",
    status_code=201,
    response_model=TeacherRead,
    openapi_extra=TEACHER_UPLOAD_BODY,
    responses=UPLOAD_PROBLEMS,
    summary="Upload a teacher (ONNX or torch.export .pt2)",
)
async def upload_teacher(request: Request, uow: UoW, tenant_id: TenantId) -> Any:
    return await uploads.receive_upload(
        uow,
        kind="teacher",
        tenant_id=tenant_id,
        content_type=request.headers.get("content-type", ""),
        content_length=_length(request),
        body=request.stream(),
        storage=get_storage(),
    )


@router.get("/teachers", response_model=Page[TeacherRead], summary="List teachers, newest first")
def list_teachers(
    uow: UoW, tenant_id: TenantId, limit: Limit = 50, cursor: str | None = None
) -> Any:
    items, nxt = uploads.list_teachers(uow, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/teachers/{teacher_id}", response_model=TeacherRead)
def get_teacher(teacher_id: str, uow: UoW, tenant_id: TenantId) -> Any:
    return uploads.get_teacher(uow.session, tenant_id=tenant_id, teacher_id=teacher_id)


@router.delete(
    "/teachers/{teacher_id}",
    status_code=204,
    response_class=Response,
    responses=problems(ErrorCode.CONFLICT),
)
def delete_teacher(teacher_id: str, uow: UoW, tenant_id: TenantId) -> Response:
    uploads.delete_teacher(uow, get_storage(), tenant_id=tenant_id, teacher_id=teacher_id)
    return Response(status_code=204)


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetRead,
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_PROBLEMS,
    summary="Upload a transfer set (.npy, .npz, CSV, Parquet, ZIP of images)",
)
async def upload_dataset(request: Request, uow: UoW, tenant_id: TenantId) -> Any:
    return await uploads.receive_upload(
        uow,
        kind="dataset",
        tenant_id=tenant_id,
        content_type=request.headers.get("content-type", ""),
        content_length=_length(request),
        body=request.stream(),
        storage=get_storage(),
    )


@router.get("/datasets", response_model=Page[DatasetRead], summary="List datasets, newest first")
def list_datasets(
    uow: UoW, tenant_id: TenantId, limit: Limit = 50, cursor: str | None = None
) -> Any:
    items, nxt = uploads.list_datasets(uow, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/datasets/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: str, uow: UoW, tenant_id: TenantId) -> Any:
    return uploads.get_dataset(uow.session, tenant_id=tenant_id, dataset_id=dataset_id)


@router.delete(
    "/datasets/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=problems(ErrorCode.CONFLICT),
)
def delete_dataset(dataset_id: str, uow: UoW, tenant_id: TenantId) -> Response:
    uploads.delete_dataset(uow, get_storage(), tenant_id=tenant_id, dataset_id=dataset_id)
    return Response(status_code=204)
