"""Job submission (validated against the teachers and datasets before anything is queued),
reading, cancelling, deleting, history. Services flush; the request's unit of work commits."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from api.errors import Conflict, Invalid, NotFound
from api.publisher import enqueue
from api.services.quotas import check_active_jobs, hold_tenant
from core.artifacts import Artifact, Artifacts
from core.db import UnitOfWork, get_engine
from core.enums import ACTIVE, TERMINAL, JobStatus, UploadStatus
from core.queue import TASK_RUN_JOB
from core.spec import JobSpec
from core.storage import Storage
from core.students import LM_ARCHITECTURES, TOKEN_ARCHITECTURES, fits_input
from core.tokens import missing_inputs
from models import Dataset, Job, JobEpoch, JobEvent, Teacher, new_id
from models.history_repository import HistoryRepository
from models.job_repository import JobRepository, read_job_row
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository

log = logging.getLogger(__name__)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _teachers(uow: UnitOfWork, tenant_id: str, spec: JobSpec) -> list[Teacher]:
    found = TeacherRepository(uow.session).get_many_for_tenant(tenant_id, spec.teacher_ids)
    teachers = []
    for i, teacher_id in enumerate(spec.teacher_ids):
        field = f"teacher_ids[{i}]"
        if teacher_id in spec.teacher_ids[:i]:
            raise _invalid(field, f"teacher {teacher_id!r} is already in the ensemble")
        teacher = found.get(teacher_id)
        if teacher is None:
            raise _invalid(field, f"no teacher {teacher_id!r}")
        if teacher.status != UploadStatus.READY:
            raise _invalid(field, f"teacher {teacher_id!r} is {teacher.status}, not ready")
        if teacher.input_kind == "tokens":
            pass
        elif teacher.input_dtype and not teacher.input_dtype.startswith(("float", "bfloat")):
            raise _invalid(field, f"teacher takes {teacher.input_dtype} inputs; only float inputs")
        teachers.append(teacher)
    first = teachers[0]
    for i, teacher in enumerate(teachers[1:], start=1):
        if teacher.num_classes != first.num_classes:
            raise _invalid(
                f"teacher_ids[{i}]",
                f"an ensemble needs one class count: {teacher.num_classes} != {first.num_classes}",
            )
        if (teacher.input_shape or [])[1:] != (first.input_shape or [])[1:]:
            raise _invalid(
                f"teacher_ids[{i}]",
                f"an ensemble needs one input shape: {teacher.input_shape} != {first.input_shape}",
            )
    top_k = spec.distillation.top_k
    if top_k is not None and first.num_classes is not None and top_k >= first.num_classes:
        raise _invalid(
            "distillation.top_k",
            f"{top_k} is not below the teacher's {first.num_classes} classes; leave it unset "
            "to keep every logit",
        )
    return teachers


def _dataset(uow: UnitOfWork, tenant_id: str, field: str, dataset_id: str) -> Dataset:
    dataset = DatasetRepository(uow.session).get_for_tenant(tenant_id, dataset_id)
    if dataset is None:
        raise _invalid(field, f"no dataset {dataset_id!r}")
    if dataset.status != UploadStatus.READY:
        raise _invalid(field, f"dataset {dataset_id!r} is {dataset.status}, not ready")
    return dataset


def _check_tokens(field: str, teacher: Teacher, dataset: Dataset) -> None:
    """A token teacher reads token datasets whose arrays supply its ids, or text datasets
    when it came with a tokenizer."""
    if dataset.kind == "text":
        if teacher.tokenizer_file_id is None or teacher.tokenizer is None:
            raise _invalid(
                field,
                "a text dataset is tokenized with the teacher's tokenizer; upload the teacher "
                "with its tokenizer.json (the tokenizer part)",
            )
        return
    if dataset.kind != "tokens":
        raise _invalid(
            field,
            "the teacher takes token inputs; upload an .npz of arrays or a Parquet file of "
            "list columns named like its inputs (input_ids, attention_mask, ...), or text",
        )
    names = [str(spec["name"]) for spec in teacher.inputs or []]
    missing = missing_inputs(names, dataset.inputs or [])
    if missing:
        raise _invalid(field, f"the dataset has no array {missing[0]!r}, a teacher input")
    shape = (teacher.inputs or [{}])[0].get("shape") or [None]
    length, have = shape[-1], (dataset.sample_shape or [0])[-1]
    if length is not None and have != length:
        raise _invalid(field, f"sequences of {have} tokens; the teacher takes {length}")


def _check_shapes(field: str, teacher: Teacher, dataset: Dataset) -> None:
    if teacher.input_kind == "tokens":
        _check_tokens(field, teacher, dataset)
        return
    if dataset.kind in ("tokens", "text"):
        raise _invalid(field, f"a {dataset.kind} dataset needs a teacher that takes token inputs")
    want = list((teacher.input_shape or [None])[1:])
    have = list(dataset.sample_shape or [])
    if dataset.format == "image_zip" and len(want) == 3 and len(have) == 3:
        # Images are resized to the teacher's H x W; only the channel count must agree.
        if want[0] is not None and want[0] != have[0]:
            raise _invalid(field, f"images have {have[0]} channels, the teacher takes {want[0]}")
        return
    if len(want) == len(have) and all(w is None or w == h for w, h in zip(want, have, strict=True)):
        return
    known = [w for w in want if w is not None]
    if len(known) == len(want) and math.prod(known) == math.prod(have):
        return  # same numbers per sample in another layout: the loader reshapes (64 -> 1x8x8)
    raise _invalid(
        field,
        f"samples of shape {have} do not fit the teacher's input "
        f"{['N', *['*' if w is None else w for w in want]]}",
    )


def _check_labels(field: str, teacher: Teacher, dataset: Dataset) -> None:
    labels, classes = dataset.num_classes, teacher.num_classes
    if dataset.has_labels and labels and classes and labels > classes:
        raise _invalid(
            field, f"labels go up to class {labels - 1}, the teacher has {classes} classes"
        )


def _check_objective(teachers: list[Teacher], spec: JobSpec, shape: list[int]) -> None:
    """kd_jacobian differentiates the teachers (torch programs only); shifts and flips need
    images, samples [H, W] or [C, H, W]; MUNGE needs tabular samples [D]."""
    if spec.distillation.loss == "kd_jacobian":
        for i, teacher in enumerate(teachers):
            if teacher.format != "torch_export":
                raise _invalid(
                    "distillation.loss",
                    f"kd_jacobian needs the teachers' input gradients; teacher_ids[{i}] is "
                    f"{teacher.format}, only .pt2 (torch.export) teachers give them",
                )
    aug = spec.augmentation
    for name, asked in (("shift", aug.shift), ("flip", aug.flip)):
        if asked and len(shape) not in (2, 3):
            raise _invalid(
                f"augmentation.{name}",
                f"needs images ([H, W] or [C, H, W] samples); samples have shape {shape}",
            )
    if aug.shift and aug.shift >= min(shape[-2:]):
        raise _invalid("augmentation.shift", f"{aug.shift} is not below the image size")
    if aug.munge and len(shape) != 1:
        raise _invalid(
            "augmentation.munge", f"needs tabular samples ([D] vectors); samples have shape {shape}"
        )


SEQUENCE_ONLY_LOSSES = ("reverse_kl", "jsd")


def _check_language_model_spec(teachers: list[Teacher], spec: JobSpec) -> None:
    """Language-model teachers: one teacher, no sweep, no baseline (the student and the loss
    are checked by ``_check_token_spec``)."""
    if len(teachers) > 1:
        raise _invalid("teacher_ids", "a language model is distilled from one teacher")
    if spec.sweep is not None:
        raise _invalid("sweep", "not offered for language models")
    if spec.baseline:
        raise _invalid("baseline", "not offered for language models")


def _check_token_spec(spec: JobSpec, architectures: tuple[str, ...] = TOKEN_ARCHITECTURES) -> None:
    """Token teachers: a text student (``architectures``: a gpt for a language model), no
    image augmentation, no input gradients."""
    if spec.student.architecture not in ("auto", *architectures):
        raise _invalid(
            "student.architecture",
            f"{spec.student.architecture!r} does not fit this teacher; use auto, "
            + " or ".join(architectures),
        )
    if spec.distillation.loss == "kd_jacobian":
        raise _invalid("distillation.loss", "kd_jacobian needs float inputs, not token ids")
    aug = spec.augmentation
    for name, asked in (("shift", aug.shift), ("flip", aug.flip)):
        if asked:
            raise _invalid(f"augmentation.{name}", "needs images; the teacher takes tokens")
    if spec.preprocessing.mean is not None or spec.preprocessing.std is not None:
        raise _invalid("preprocessing", "token ids are not normalised; leave mean and std unset")


def _sample_shape(teacher: Teacher, transfer: Dataset) -> list[int]:
    """A sample's shape as the student sees it: the teacher's input shape when it names every
    dimension (the loader reshapes, 64 -> 1x8x8), else the transfer set's."""
    known = [d for d in (teacher.input_shape or [None])[1:] if d is not None]
    teacher_rank = len(teacher.input_shape or [None]) - 1
    return known if len(known) == teacher_rank else list(transfer.sample_shape or [])


def validate_spec(uow: UnitOfWork, tenant_id: str, spec: JobSpec) -> tuple[list[Teacher], Dataset]:
    teachers = _teachers(uow, tenant_id, spec)
    transfer = _dataset(uow, tenant_id, "dataset_id", spec.dataset_id)
    _check_shapes("dataset_id", teachers[0], transfer)
    _check_labels("dataset_id", teachers[0], transfer)
    if spec.eval_dataset_id is not None:
        evalset = _dataset(uow, tenant_id, "eval_dataset_id", spec.eval_dataset_id)
        _check_shapes("eval_dataset_id", teachers[0], evalset)
        _check_labels("eval_dataset_id", teachers[0], evalset)
    if teachers[0].task == "language_model":
        _check_language_model_spec(teachers, spec)
        _check_token_spec(spec, LM_ARCHITECTURES)
        return teachers, transfer
    if spec.distillation.loss in SEQUENCE_ONLY_LOSSES:
        raise _invalid(
            "distillation.loss",
            f"{spec.distillation.loss} is for language-model teachers; use kd or kd_jacobian",
        )
    if teachers[0].input_kind == "tokens":
        _check_token_spec(spec)
        if spec.baseline:
            _check_baseline(uow, tenant_id, spec, transfer)
        _check_sweep(spec)
        return teachers, transfer
    shape = _sample_shape(teachers[0], transfer)
    if not fits_input(spec.student.architecture, shape):
        raise _invalid(
            "student.architecture",
            f"{spec.student.architecture!r} does not fit inputs of shape {shape}",
        )
    _check_objective(teachers, spec, shape)
    mean = spec.preprocessing.mean
    channels = shape[0] if shape else 1
    if mean is not None and len(mean) not in (1, channels):
        raise _invalid("preprocessing.mean", f"give 1 or {channels} values (one per channel)")
    _check_sweep(spec)
    if spec.baseline:
        _check_baseline(uow, tenant_id, spec, transfer)
    return teachers, transfer


def _check_sweep(spec: JobSpec) -> None:
    if spec.sweep is None:
        return
    if spec.soft_label_mode != "cached":
        raise _invalid(
            "sweep",
            "every student of a sweep learns from one stored soft-label pass: it needs "
            'distillation.soft_labels "cached", no augmentation and the "kd" loss (those run '
            "the teacher online)",
        )
    fixed = spec.student.max_parameters is not None or spec.student.hidden is not None
    if spec.sweep.size_ratio is not None and fixed:
        raise _invalid(
            "sweep.size_ratio",
            "student.max_parameters or student.hidden fixes the student's size: every size "
            "ratio would give the same student",
        )


def _check_baseline(uow: UnitOfWork, tenant_id: str, spec: JobSpec, transfer: Dataset) -> None:
    """A hard-label baseline trains on the transfer set's labels and is scored on the eval
    set's: both need them."""
    if not transfer.has_labels:
        raise _invalid("baseline", "the transfer set has no labels to train a baseline on")
    if spec.eval_dataset_id is not None:
        evalset = DatasetRepository(uow.session).get_for_tenant(tenant_id, spec.eval_dataset_id)
        if evalset is not None and not evalset.has_labels:
            raise _invalid("baseline", "the eval set has no labels to score a baseline on")


def _request_hash(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(
    uow: UnitOfWork, *, tenant_id: str, spec: JobSpec, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Returns (job, created). The same key with the same body returns the first job."""
    digest = _request_hash(spec)
    jobs = JobRepository(uow.session)
    hold_tenant(uow.session, tenant_id)  # a replay and a count both see the last commit
    if idempotency_key:
        existing = jobs.by_idempotency_key(tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False
    check_active_jobs(uow.session, tenant_id)
    teachers, transfer = validate_spec(uow, tenant_id, spec)
    # Tabular as the engine sees the samples: a [64] set for a 1x8x8 teacher is reshaped to
    # images, where MUNGE does not apply.
    tabular = teachers[0].input_kind != "tokens" and len(_sample_shape(teachers[0], transfer)) == 1
    spec = spec.scheduled(transfer.num_samples or 1, tabular=tabular)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        status=JobStatus.QUEUED,
        epochs=spec.training.epochs,
        spec=spec.model_dump(mode="json"),
        metrics={},
        artifacts={},
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    datasets = {"transfer": spec.dataset_id}
    if spec.eval_dataset_id is not None:
        datasets["eval"] = spec.eval_dataset_id
    try:
        with uow.session.begin_nested():  # a concurrent twin with the same key: replay it
            jobs.add(job, spec.teacher_ids, datasets)
    except IntegrityError:
        existing = jobs.by_idempotency_key(tenant_id, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, digest), False
    job_id = job.id
    enqueue(uow, TASK_RUN_JOB, job_id)
    uow.after_commit(
        lambda: log.info(
            "job %s submitted: %d teacher(s), %d epochs",
            job_id,
            len(spec.teacher_ids),
            spec.training.epochs,
            extra={"job_id": job_id},
        )
    )
    return job, True


def _replay(existing: Job, digest: str) -> Job:
    if existing.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with another request body")
    return existing


def get_job(uow: UnitOfWork, *, tenant_id: str, job_id: str) -> Job:
    job = JobRepository(uow.session).get_for_tenant(tenant_id, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def cancel(uow: UnitOfWork, *, tenant_id: str, job_id: str) -> Job:
    job = get_job(uow, tenant_id=tenant_id, job_id=job_id)
    if job.status in TERMINAL:
        raise Conflict(f"the job already ended ({job.status})")
    JobRepository(uow.session).request_cancel(job)
    uow.after_commit(lambda: log.info("job %s: cancel requested", job_id))
    return job


def delete(uow: UnitOfWork, storage: Storage, *, tenant_id: str, job_id: str) -> None:
    """A finished job goes with its history and its students' files (once committed)."""
    job = get_job(uow, tenant_id=tenant_id, job_id=job_id)
    if job.status in ACTIVE:
        raise Conflict(f"the job is {job.status}: cancel it first, or wait until it ends")
    files = StoredFileRepository(uow.session)
    keys = []
    for artifact in Artifacts.of(job.artifacts).every():
        stored = None if artifact.file_id is None else files.get(artifact.file_id)
        if stored is not None:
            files.delete(stored)
        keys.append(artifact.key)
    JobRepository(uow.session).delete(job)

    def remove_files() -> None:
        for key in keys:
            storage.delete(key)
        log.info("job %s deleted with %d file(s)", job_id, len(keys))

    uow.after_commit(remove_files)


def epochs(uow: UnitOfWork, *, tenant_id: str, job_id: str) -> list[JobEpoch]:
    get_job(uow, tenant_id=tenant_id, job_id=job_id)
    return HistoryRepository(uow.session).epochs(job_id)


def events(
    uow: UnitOfWork, *, tenant_id: str, job_id: str, limit: int, cursor: str | None
) -> tuple[list[JobEvent], str | None]:
    get_job(uow, tenant_id=tenant_id, job_id=job_id)
    return HistoryRepository(uow.session).events(job_id, limit=limit, cursor=cursor)


def read_job_view(tenant_id: str, job_id: str) -> tuple[int, dict[str, Any]] | None:
    """(revision, view) of one job, from one Core statement on a briefly held connection."""
    with get_engine().connect() as conn:
        row = read_job_row(conn, tenant_id, job_id)
    return None if row is None else (row.revision, job_view(row))


def job_view(job: Job | Row[Any]) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "epoch": job.epoch,
        "epochs": job.epochs,
        "metrics": job.metrics or {},
        "error": job.error,
        "spec": job.spec,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "report": job.report if job.status == JobStatus.SUCCEEDED else None,
        "attempt": job.attempt,
        "student_formats": Artifacts.of(job.artifacts).formats(),
    }


def tokenizer_file(uow: UnitOfWork, *, tenant_id: str, job: Job) -> Artifact | None:
    """The tokenizer.json the job's (first) teacher came with, as a downloadable file."""
    teacher_id = (job.spec or {}).get("teacher_ids", [None])[0]
    teacher = TeacherRepository(uow.session).get_for_tenant(tenant_id, str(teacher_id))
    if teacher is None or teacher.tokenizer_file_id is None:
        return None
    stored = StoredFileRepository(uow.session).get(teacher.tokenizer_file_id)
    if stored is None:
        return None
    return Artifact(
        file_id=stored.id,
        key=stored.key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        filename="tokenizer.json",
    )


def list_jobs(
    uow: UnitOfWork,
    *,
    tenant_id: str,
    limit: int,
    cursor: str | None,
    status: JobStatus | None = None,
) -> tuple[list[Job], str | None]:
    """One page of the tenant's jobs, newest first, and the cursor of the next."""
    return JobRepository(uow.session).list_for_tenant(
        tenant_id, limit=limit, cursor=cursor, status=status
    )
