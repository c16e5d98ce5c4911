"""Validate uploads: the guarded loaders run in the sandbox and fill the row, or reject it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.orm import object_session

from core.contracts import AnyEvent, InspectDatasetRequest, InspectTeacherRequest
from core.db import session_scope
from core.enums import UploadStatus
from core.errors import ErrorCode
from core.settings import Settings, engine_limits, get_settings
from core.storage import get_storage, new_key
from models import StoredFile, new_id
from models.base import utcnow
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from worker.sandbox import SandboxError, run_once
from worker.spare import Spare

log = logging.getLogger(__name__)
VALIDATE_TIMEOUT_S = 600

# Either upload repository: the two share every method used here.
Repository = Callable[[Any], Any]
Kind = Literal["teacher", "dataset"]
REPOSITORIES: dict[Kind, Repository] = {"teacher": TeacherRepository, "dataset": DatasetRepository}
_MISSING = {"code": ErrorCode.INTERNAL, "message": "the uploaded file is missing from storage"}


def _child_limits(settings: Settings) -> tuple[int, int, int]:
    return 1, VALIDATE_TIMEOUT_S, settings.validation_memory_bytes


# This worker process's spare children, for its next uploads (worker/spare.py): a teacher's
# validation need not wait seconds for torch and onnxruntime to import, nor a dataset's about
# a second for a new interpreter and numpy.
SPARES: dict[Kind, Spare] = {
    "teacher": Spare(_child_limits, preload="teacher"),
    "dataset": Spare(_child_limits, preload="dataset"),
}


def inspect_in_sandbox(
    request: BaseModel, settings: Settings | None = None, timeout_s: float = VALIDATE_TIMEOUT_S
) -> AnyEvent:
    """The upload's inspection by this process's spare of its kind (else a cold child), under
    the validation's limits; raises ``SandboxError``."""
    settings = settings or get_settings()
    threads, cpu_seconds, memory_bytes = _child_limits(settings)
    return run_once(
        request,
        threads=threads,
        memory_bytes=memory_bytes,
        cpu_seconds=cpu_seconds,
        timeout_s=timeout_s,
        settings=settings,
        spare=SPARES["teacher" if isinstance(request, InspectTeacherRequest) else "dataset"],
    )


def _inspect(request: BaseModel) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    try:
        result = inspect_in_sandbox(request)
    except SandboxError as exc:
        return None, {"code": exc.code, "message": exc.message}
    return result.model_dump(exclude={"event"}), None


def _validate(
    repository: Repository,
    row_id: str,
    make_request: Callable[[str, str, dict[str, Any]], BaseModel],
    metadata: Callable[[dict[str, Any]], dict[str, Any]],
    asks: Callable[[Any], dict[str, Any]] = lambda row: {},
    keep: Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Claim the row's validation, inspect its file in the sandbox (no session held
    meanwhile, the lease renewed), then write ``ready`` with the metadata or ``rejected`` with
    the reason, unless another attempt took the upload over. ``keep`` (session, info, asked)
    stores what validation produced beside the metadata (a model folder's tokenizer.json)
    and returns more fields for the row."""
    settings = get_settings()
    lease = timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        repo = repository(session)
        attempt = repo.claim(row_id, lease=lease, max_attempts=settings.max_attempts)
        if attempt is None:  # validated, validating elsewhere, or deleted
            return
        row = repo.get(row_id)
        stored = StoredFileRepository(session).get(row.file_id)
        if stored is None:
            repo.finish(row_id, attempt, status=UploadStatus.REJECTED, error=_MISSING)
            return
        key, sha256, fmt, asked = stored.key, stored.sha256, row.format, asks(row)
    with _Renewing(repository, row_id, attempt, lease, settings.heartbeat_seconds):
        path = str(get_storage().local_path(key, sha256))  # a download from S3 takes a while
        info, error = _inspect(make_request(path, fmt, asked))
    with session_scope() as session:
        repo = repository(session)
        if error is not None:
            if repo.finish(row_id, attempt, status=UploadStatus.REJECTED, error=error):
                log.info("%s rejected: %s", row_id, error)
        else:
            assert info is not None
            fields = metadata(info)
            kept = {} if keep is None else keep(session, info, asked)
            if not repo.finish(row_id, attempt, status=UploadStatus.READY, **fields, **kept):
                _drop_kept(session, kept)  # another attempt took over: its own copy counts


class _Renewing:
    """Renews the validation's lease every ``period_s`` while the block runs. A worker that
    dies stops renewing it, and the sweep hands the upload out again once it expires."""

    def __init__(
        self, repository: Repository, row_id: str, attempt: int, lease: timedelta, period_s: float
    ) -> None:
        self.claim = (repository, row_id, attempt, lease)
        self.period_s = max(0.1, period_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                _renew(*self.claim)
            except Exception:  # the database away a while: the lease may run out, fenced
                log.warning("could not renew the validation's lease", exc_info=True)


def _renew(repository: Repository, row_id: str, attempt: int, lease: timedelta) -> None:
    with session_scope() as session:
        repository(session).renew(row_id, attempt, lease=lease)


def validate_teacher(teacher_id: str) -> None:
    _validate(
        TeacherRepository,
        teacher_id,
        lambda path, fmt, asked: InspectTeacherRequest(
            path=path,
            format=fmt,
            allow_torchscript=get_settings().allow_torchscript,
            output_name=asked["output_name"],
            output_kind=asked["output_kind"],
            tokenizer_path=_tokenizer_path(asked["tokenizer"]),
            limits=engine_limits(get_settings()),
        ),
        lambda info: {
            "input_shape": info["input_shape"],
            "input_dtype": info["input_dtype"],
            "num_classes": info["num_classes"],
            "parameters": info.get("parameters"),
            "outputs": info.get("outputs"),
            "output_name": info.get("output_name"),
            "output_kind": info.get("output_kind"),
            "output_reason": info.get("output_reason"),
            "inputs": info.get("inputs"),
            "input_kind": info.get("input_kind", "tensor"),
            "task": info.get("task", "classification"),
            "vocab_size": info.get("vocab_size"),
            "tokenizer": info.get("tokenizer"),
        },
        # What the upload asked for: the dry run honours it or rejects the teacher saying why.
        lambda row: {
            "output_name": row.output_name,
            "output_kind": row.output_kind or "auto",
            "tokenizer": _tokenizer_file(row),
            "tenant_id": row.tenant_id,
        },
        _keep_folder_tokenizer,
    )


def _drop_kept(session: Any, kept: dict[str, Any]) -> None:
    file_id = kept.get("tokenizer_file_id")
    files = StoredFileRepository(session)
    stored = None if file_id is None else files.get(file_id)
    if stored is not None:
        key = stored.key
        files.delete(stored)
        get_storage().delete(key)


def _keep_folder_tokenizer(
    session: Any, info: dict[str, Any], asked: dict[str, Any]
) -> dict[str, Any]:
    """A model folder's tokenizer.json (its text came back from the sandbox, which read and
    described it) stored as the teacher's tokenizer, as an uploaded tokenizer part is."""
    text = info.get("tokenizer_json")
    if not isinstance(text, str) or asked.get("tokenizer") is not None:
        return {}
    data = text.encode("utf-8")
    if len(data) > get_settings().max_form_tokenizer_bytes:
        return {}  # larger than an uploaded tokenizer may be: the teacher stays without one
    storage = get_storage()
    put = storage.put_stream(new_key("tokenizers"), [data])
    stored = StoredFileRepository(session).add(
        StoredFile(
            id=new_id("file"),
            tenant_id=asked["tenant_id"],
            key=put.key,
            kind="tokenizer",
            filename="tokenizer.json",
            size_bytes=put.size_bytes,
            sha256=put.sha256,
        )
    )
    return {"tokenizer_file_id": stored.id}


def _tokenizer_file(row: Any) -> tuple[str, str] | None:
    """The (key, sha256) of the teacher's tokenizer.json, if it came with one."""
    if row.tokenizer_file_id is None:
        return None
    session = object_session(row)
    assert session is not None  # asked while the claim's session holds the row
    stored = StoredFileRepository(session).get(row.tokenizer_file_id)
    return None if stored is None else (stored.key, stored.sha256)


def _tokenizer_path(stored: tuple[str, str] | None) -> str | None:
    return None if stored is None else str(get_storage().local_path(*stored))


def validate_dataset(dataset_id: str) -> None:
    _validate(
        DatasetRepository,
        dataset_id,
        lambda path, fmt, asked: InspectDatasetRequest(
            path=path, format=fmt, limits=engine_limits(get_settings())
        ),
        lambda info: {
            "num_samples": info["num_samples"],
            "sample_shape": info["sample_shape"],
            "dtype": info["dtype"],
            "has_labels": bool(info["has_labels"]),
            "num_classes": info.get("num_classes"),
            "kind": info.get("kind", "tensor"),
            "inputs": info.get("inputs"),
        },
    )


def requeue_stale(publish: Callable[[Kind, str], None]) -> int:
    """The sweep's part for uploads (the jobs' is ``pipeline.requeue_stale``): an upload
    whose validation stopped renewing its lease (its worker killed) is published again, or
    rejected as ``worker_lost`` once ``max_attempts`` attempts ended so; one that no worker
    claimed for ten leases (its message lost on the way) is published again. So every
    upload ends ``ready`` or ``rejected``. Returns how many were published."""
    settings = get_settings()
    now = utcnow()
    lost = now - 10 * timedelta(seconds=settings.lease_seconds)
    again: list[tuple[Kind, str]] = []
    with session_scope() as session:
        for kind, repository in REPOSITORIES.items():
            repo = repository(session)
            for row in repo.stale(now):
                if row.attempt >= settings.max_attempts:
                    error = _given_up(settings.max_attempts)
                    if repo.finish(row.id, row.attempt, status=UploadStatus.REJECTED, error=error):
                        log.warning("%s rejected: %s", row.id, error["message"])
                elif repo.release(row.id, row.attempt):
                    again.append((kind, row.id))
            for row in repo.unclaimed_since(lost):
                repo.update(row, updated_at=now)
                again.append((kind, row.id))
    for kind, row_id in again:
        publish(kind, row_id)
    if again:
        log.info("sweep: validations re-queued: %s", ", ".join(row_id for _, row_id in again))
    return len(again)


def _given_up(attempts: int) -> dict[str, str]:
    return {
        "code": ErrorCode.WORKER_LOST,
        "message": f"the worker validating this file stopped {attempts} times; giving up",
    }
