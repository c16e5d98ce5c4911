"""The sweep's part for uploads: every upload ends ``ready`` or ``rejected``, whatever
happened to the worker validating it or to the message that asked for it."""

from __future__ import annotations

import secrets
from datetime import timedelta

from core.db import session_scope
from core.enums import UploadStatus
from core.errors import ErrorCode
from core.settings import get_settings
from models.base import utcnow
from models.repositories import DatasetRepository
from models.tables import Dataset, StoredFile, Tenant
from worker import validation

LEASE = timedelta(seconds=get_settings().lease_seconds)


def _dataset(**values: object) -> str:
    """A dataset ``validating``, with ``values`` (its attempt, lease, updated_at) set."""
    suffix = secrets.token_hex(4)
    with session_scope() as session:
        session.add(Tenant(id=f"ten_{suffix}", name=f"t-{suffix}"))
        session.flush()
        stored = StoredFile(
            id=f"file_{suffix}",
            tenant_id=f"ten_{suffix}",
            key=f"k/{suffix}",
            kind="dataset",
            size_bytes=1,
            sha256="0" * 64,
        )
        session.add(stored)
        session.flush()
        row = Dataset(
            id=f"ds_{suffix}",
            tenant_id=f"ten_{suffix}",
            file_id=stored.id,
            name="d",
            filename="d.npz",
            format="npz",
            size_bytes=1,
            sha256="0" * 64,
        )
        session.add(row)
        session.flush()
        DatasetRepository(session).update(row, **values)
        return row.id


def _sweep() -> list[tuple[str, str]]:
    published: list[tuple[str, str]] = []
    validation.requeue_stale(lambda kind, row_id: published.append((kind, row_id)))
    return published


def _row(row_id: str) -> Dataset:
    with session_scope() as session:
        row = DatasetRepository(session).get(row_id)
        assert row is not None
        session.expunge(row)
        return row


def test_an_expired_validation_is_published_again_and_claimed_by_the_next_attempt(
    db: str,
) -> None:
    row_id = _dataset(attempt=1, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert _sweep() == [("dataset", row_id)]
    assert _row(row_id).lease_expires_at is None
    with session_scope() as session:
        assert DatasetRepository(session).claim(row_id, lease=LEASE, max_attempts=3) == 2


def test_a_held_lease_is_left_alone(db: str) -> None:
    row_id = _dataset(attempt=1, lease_expires_at=utcnow() + LEASE)
    assert _sweep() == []
    with session_scope() as session:
        assert DatasetRepository(session).claim(row_id, lease=LEASE, max_attempts=3) is None


def test_a_validation_lost_max_attempts_times_is_rejected_as_worker_lost(db: str) -> None:
    attempts = get_settings().max_attempts
    row_id = _dataset(attempt=attempts, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert _sweep() == []
    row = _row(row_id)
    assert row.status == UploadStatus.REJECTED
    assert row.error is not None and row.error["code"] == ErrorCode.WORKER_LOST


def test_an_upload_no_worker_claimed_for_ten_leases_is_published_again(db: str) -> None:
    lost = _dataset(updated_at=utcnow() - 11 * LEASE)
    _dataset()  # just uploaded: its message is still on its way
    assert _sweep() == [("dataset", lost)]
    assert _sweep() == []  # not again before another ten leases


def test_an_attempt_taken_over_cannot_write_its_outcome(db: str) -> None:
    row_id = _dataset()
    with session_scope() as session:
        repo = DatasetRepository(session)
        assert repo.claim(row_id, lease=-LEASE, max_attempts=3) == 1  # expired at once
        assert repo.claim(row_id, lease=LEASE, max_attempts=3) == 2
        assert not repo.finish(row_id, 1, status=UploadStatus.READY)
        assert repo.finish(row_id, 2, status=UploadStatus.READY)
