"""ORM classes: tenants, API keys, stored files, teachers, datasets, jobs and their history
(webhooks live in ``models.webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.enums import JobStatus, UploadStatus
from models.base import Base, JSONType, UTCDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # sha256 of the key: keys are high-entropy random strings, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # "read" | "write" | "admin" (core.keys.Scope). Keys made before scopes existed are admin.
    scope: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StoredFile(Base):
    """One object in storage. ``key`` is generated; the user's file name is metadata only."""

    __tablename__ = "stored_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str | None] = mapped_column(String(300), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class _Upload:
    """Columns shared by teachers and datasets."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.VALIDATING)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The validation's claim, as a job's: the attempt that holds it, and until when (renewed
    # while it runs). The sweep hands an expired one out again (worker/validation.py).
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Teacher(_Upload, Base):
    __tablename__ = "teachers"
    __table_args__ = (Index("ix_teachers_status_lease", "status", "lease_expires_at"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("stored_files.id"))
    input_shape: Mapped[list[int | None] | None] = mapped_column(JSONType, nullable=True)
    input_dtype: Mapped[str | None] = mapped_column(String(16), nullable=True)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parameters: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # What the upload asked for ("auto" = let the validation dry run decide), replaced by what
    # the dry run chose; `output_reason` says why. `outputs`: [{"name", "dtype", "shape"}].
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    output_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    output_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    output_reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # Every input [{"name", "dtype", "shape"}]; input_shape/input_dtype describe the first.
    inputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    input_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    vocab_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The uploaded tokenizer.json (a stored file) and what validation read from it:
    # {"vocab_size", "max_length", "sha256"}.
    tokenizer_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tokenizer: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class Dataset(_Upload, Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_status_lease", "status", "lease_expires_at"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("stored_files.id"))
    num_samples: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sample_shape: Mapped[list[int] | None] = mapped_column(JSONType, nullable=True)
    dtype: Mapped[str | None] = mapped_column(String(16), nullable=True)
    has_labels: Mapped[bool] = mapped_column(Boolean, default=False)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Token datasets: the names of their arrays (input_ids, attention_mask, ...).
    inputs: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # {format: {"file_id", "key", "sha256", "size_bytes", "filename"}}
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped on every visible change: the SSE event id.
    revision: Mapped[int] = mapped_column(Integer, default=0)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class JobTeacher(Base):
    """Which teachers a job uses (so a teacher in use cannot be deleted)."""

    __tablename__ = "job_teachers"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[str] = mapped_column(ForeignKey("teachers.id"), index=True)


class JobDataset(Base):
    __tablename__ = "job_datasets"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)  # "transfer" | "eval"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)


class JobEpoch(Base):
    """One finished epoch of one attempt (a resumed attempt repeats the epoch it resumed in)."""

    __tablename__ = "job_epochs"
    __table_args__ = (PrimaryKeyConstraint("job_id", "epoch", "attempt"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    soft_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    hard_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    eval_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobEvent(Base):
    """What happened to a job, oldest first (``id`` orders it and is the list cursor)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
