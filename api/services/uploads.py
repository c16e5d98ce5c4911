"""Teacher and dataset uploads: stream to storage, recognise the format, record, validate."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any, Literal

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import Conflict, Invalid, NotFound, TooLarge, UnsupportedFormat
from api.metrics import count_upload
from api.multipart import FormLimits, stream_upload
from api.publisher import enqueue
from api.services.quotas import check_stored_bytes
from core import formats
from core.db import UnitOfWork
from core.enums import UploadStatus
from core.outputs import MAX_OUTPUT_NAME, REQUESTED_OUTPUT_KINDS
from core.queue import TASK_VALIDATE_DATASET, TASK_VALIDATE_TEACHER
from core.settings import get_settings
from core.storage import Storage, new_key
from models import Dataset, StoredFile, Teacher, new_id
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository

Kind = Literal["teacher", "dataset"]
TOKENIZER_PART = "tokenizer"  # a teacher's optional tokenizer.json, beside its file

TEACHER_FORMATS = (
    "ONNX, a torch.export .pt2 archive or a zipped Hugging Face model folder "
    "(config.json, model.safetensors, tokenizer.json)"
)
DATASET_FORMATS = (
    ".npy, .npz, CSV, Parquet (numbers, text or token ids), JSON Lines of text or a ZIP of "
    "PNG/JPEG images"
)


async def receive_upload(
    uow: UnitOfWork,
    *,
    kind: Kind,
    tenant_id: str,
    content_type: str,
    content_length: int | None,
    body: AsyncIterator[bytes],
    storage: Storage,
) -> Teacher | Dataset:
    settings = get_settings()
    limit = settings.max_upload_bytes
    # The multipart framing adds a few hundred bytes around the file itself.
    if content_length is not None and content_length > limit + 64 * 1024:
        raise TooLarge(f"the upload is larger than the limit of {limit} bytes")
    framing = 64 * 1024  # the multipart framing around the file
    await run_in_threadpool(_check_quota, uow, tenant_id, max(0, (content_length or 0) - framing))
    key = new_key(f"{kind}s")
    limits = FormLimits(
        limit,
        settings.max_form_parts,
        settings.max_form_bytes,
        blob_names=(TOKENIZER_PART,) if kind == "teacher" else (),
        max_blob_bytes=settings.max_form_tokenizer_bytes,
    )
    parsed = await stream_upload(content_type, body, storage=storage, key=key, limits=limits)
    assert parsed.result is not None
    fmt = await run_in_threadpool(_recognise, kind, storage, key)
    filename = parsed.filename or "upload"
    name = (parsed.fields.get("name") or "").strip()[:200] or filename
    uow.after_rollback(lambda: storage.delete(key))  # no row, no bytes
    extra: dict[str, Any] = _teacher_fields(parsed.fields) if kind == "teacher" else {}
    tokenizer = parsed.blobs.get(TOKENIZER_PART)
    if tokenizer is not None:
        tokenizer_key = new_key("tokenizers")
        put = await run_in_threadpool(storage.put_stream, tokenizer_key, [tokenizer])
        uow.after_rollback(lambda: storage.delete(tokenizer_key))
        extra["tokenizer_put"] = put
    row = await run_in_threadpool(
        _record, uow, kind, tenant_id, fmt, filename, name, parsed.result, extra
    )
    count_upload(kind, row.size_bytes)
    return row


def _teacher_fields(fields: dict[str, str]) -> dict[str, str | None]:
    """The optional ``output_name`` and ``output_kind`` form fields, checked."""
    output_name = (fields.get("output_name") or "").strip() or None
    output_kind = (fields.get("output_kind") or "").strip() or "auto"
    if output_kind not in REQUESTED_OUTPUT_KINDS:
        raise Invalid(
            f"output_kind must be one of {', '.join(REQUESTED_OUTPUT_KINDS)}; "
            f"got {output_kind[:50]!r}",
            errors=[{"loc": ["body", "output_kind"], "msg": "unknown output kind"}],
        )
    if output_name is not None and len(output_name) > MAX_OUTPUT_NAME:
        raise Invalid(
            f"output_name is longer than {MAX_OUTPUT_NAME} characters",
            errors=[{"loc": ["body", "output_name"], "msg": "too long"}],
        )
    return {"output_name": output_name, "output_kind": output_kind}


def _store(uow: UnitOfWork, tenant_id: str, put: Any, kind: str, filename: str) -> StoredFile:
    return StoredFileRepository(uow.session).add(
        StoredFile(
            id=new_id("file"),
            tenant_id=tenant_id,
            key=put.key,
            kind=kind,
            filename=filename,
            size_bytes=put.size_bytes,
            sha256=put.sha256,
        )
    )


def _check_quota(uow: UnitOfWork, tenant_id: str, incoming: int) -> None:
    """Refused before streaming when the tenant is over its quota already (or would be,
    by the declared length); checked again on the stored size before recording."""
    try:
        check_stored_bytes(uow.session, tenant_id, incoming, lock=False)
    finally:
        uow.session.rollback()  # no connection held while the upload streams


def _recognise(kind: Kind, storage: Storage, key: str) -> str:
    path = storage.local_path(key)
    fmt = formats.sniff_teacher(path) if kind == "teacher" else formats.sniff_dataset(path)
    if fmt is None:
        storage.delete(key)
        accepted = TEACHER_FORMATS if kind == "teacher" else DATASET_FORMATS
        raise UnsupportedFormat(f"the file's content is not a supported {kind}: send {accepted}")
    if fmt == "torchscript" and not get_settings().allow_torchscript:
        storage.delete(key)
        raise UnsupportedFormat(
            "TorchScript has no safe loader and is disabled on this server: export the model "
            "with torch.export (.pt2) or to ONNX"
        )
    return fmt


def _record(
    uow: UnitOfWork,
    kind: Kind,
    tenant_id: str,
    fmt: str,
    filename: str,
    name: str,
    put: object,
    extra: dict[str, Any],
) -> Teacher | Dataset:
    from core.storage import PutResult

    assert isinstance(put, PutResult)
    session = uow.session
    tokenizer = extra.pop("tokenizer_put", None)
    check_stored_bytes(
        session, tenant_id, put.size_bytes + (0 if tokenizer is None else tokenizer.size_bytes)
    )
    if tokenizer is not None:
        extra["tokenizer_file_id"] = _store(
            uow, tenant_id, tokenizer, "tokenizer", "tokenizer.json"
        ).id
    stored = StoredFileRepository(session).add(
        StoredFile(
            id=new_id("file"),
            tenant_id=tenant_id,
            key=put.key,
            kind=kind,
            filename=filename,
            size_bytes=put.size_bytes,
            sha256=put.sha256,
        )
    )
    common = dict(
        tenant_id=tenant_id,
        file_id=stored.id,
        name=name,
        filename=filename,
        format=fmt,
        size_bytes=put.size_bytes,
        sha256=put.sha256,
        status=UploadStatus.VALIDATING,
    )
    row: Teacher | Dataset
    if kind == "teacher":
        row = TeacherRepository(session).add(Teacher(id=new_id("tch"), **common, **extra))
        task = TASK_VALIDATE_TEACHER
    else:
        row = DatasetRepository(session).add(Dataset(id=new_id("ds"), has_labels=False, **common))
        task = TASK_VALIDATE_DATASET
    row_id = row.id
    enqueue(uow, task, row_id)
    return row


def get_teacher(session: Session, *, tenant_id: str, teacher_id: str) -> Teacher:
    row = TeacherRepository(session).get_for_tenant(tenant_id, teacher_id)
    if row is None:
        raise NotFound(f"no teacher {teacher_id!r}")
    return row


def get_dataset(session: Session, *, tenant_id: str, dataset_id: str) -> Dataset:
    row = DatasetRepository(session).get_for_tenant(tenant_id, dataset_id)
    if row is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return row


def delete_teacher(uow: UnitOfWork, storage: Storage, *, tenant_id: str, teacher_id: str) -> None:
    row = get_teacher(uow.session, tenant_id=tenant_id, teacher_id=teacher_id)
    _delete_upload(uow, storage, TeacherRepository(uow.session), row, "teacher")


def delete_dataset(uow: UnitOfWork, storage: Storage, *, tenant_id: str, dataset_id: str) -> None:
    row = get_dataset(uow.session, tenant_id=tenant_id, dataset_id=dataset_id)
    _delete_upload(uow, storage, DatasetRepository(uow.session), row, "dataset")


def _delete_upload(
    uow: UnitOfWork,
    storage: Storage,
    repo: TeacherRepository | DatasetRepository,
    row: Any,
    kind: Kind,
) -> None:
    """Finished jobs keep the id in their spec; the row goes, then (once committed) the bytes:
    its file's, and a teacher's tokenizer's."""
    if repo.used_by_active_job(row.id):
        raise Conflict(f"a queued or running job uses this {kind}; cancel it or wait")
    repo.detach_from_jobs(row.id)
    files = StoredFileRepository(uow.session)
    file_ids = [row.file_id, getattr(row, "tokenizer_file_id", None)]
    stored = [f for f in (files.get(i) for i in file_ids if i is not None) if f is not None]
    repo.delete(row)
    for found in stored:
        files.delete(found)
        uow.after_commit(functools.partial(storage.delete, found.key))


def list_teachers(
    uow: UnitOfWork, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Teacher], str | None]:
    """One page of the tenant's teachers, newest first, and the cursor of the next."""
    return TeacherRepository(uow.session).list_for_tenant(tenant_id, limit=limit, cursor=cursor)


def list_datasets(
    uow: UnitOfWork, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    """One page of the tenant's datasets, newest first, and the cursor of the next."""
    return DatasetRepository(uow.session).list_for_tenant(tenant_id, limit=limit, cursor=cursor)
