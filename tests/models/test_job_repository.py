"""Claims, leases and attempt fencing, on Postgres and on SQLite (the embedded default)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from migrations import upgrade
from models import Job, new_id, utcnow
from models.history_repository import HistoryRepository
from models.job_repository import JobRepository
from models.keys import ensure_tenant

LEASE = timedelta(seconds=30)


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "postgresql":
        url = request.getfixturevalue("db")
    else:
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade(url)
    engine = make_engine(url)
    s = sessionmaker(bind=engine, expire_on_commit=False)()
    try:
        yield s
    finally:
        s.rollback()
        s.close()
        engine.dispose()


def _job(session: Session) -> str:
    tenant = ensure_tenant(session, "t")
    job = Job(id=new_id("job"), tenant_id=tenant.id, epochs=1, spec={}, metrics={}, artifacts={})
    JobRepository(session).add(job, [], {})
    session.commit()
    return job.id


def test_second_claim_of_a_leased_job_does_nothing(session: Session) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    assert jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3) == 1
    assert jobs.claim(job_id, worker="b", lease=LEASE, max_attempts=3) is None
    session.commit()
    job = jobs.get(job_id)
    assert job is not None and job.status == "running" and job.worker == "a"


def test_expired_lease_is_taken_over_and_the_old_attempt_is_fenced(session: Session) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    assert jobs.claim(job_id, worker="a", lease=timedelta(seconds=-1), max_attempts=3) == 1
    assert jobs.claim(job_id, worker="b", lease=LEASE, max_attempts=3) == 2
    assert not jobs.progress(job_id, 1, stage="training", progress=0.5)
    assert not jobs.heartbeat(job_id, 1, LEASE)
    assert not jobs.finish(job_id, 1, report={"x": 1}, artifacts={}, metrics={})
    assert jobs.progress(job_id, 2, stage="training", progress=0.5)
    assert jobs.finish(job_id, 2, report={"x": 2}, artifacts={}, metrics={})
    session.commit()
    session.expire_all()
    job = jobs.get(job_id)
    assert job is not None and job.status == "succeeded" and job.report == {"x": 2}


def test_no_claim_past_max_attempts_and_the_sweep_fails_the_job(session: Session) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    expired = timedelta(seconds=-1)
    assert jobs.claim(job_id, worker="a", lease=expired, max_attempts=2) == 1
    assert jobs.claim(job_id, worker="a", lease=expired, max_attempts=2) == 2
    assert jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=2) is None
    stale = jobs.stale(utcnow())
    assert [j.id for j in stale] == [job_id]
    assert jobs.fail_exhausted(stale[0], 2)
    session.commit()
    session.expire_all()
    job = jobs.get(job_id)
    assert job is not None and job.status == "failed" and job.error["code"] == "worker_lost"


def test_cancel_of_a_queued_job_ends_it_and_blocks_claims(session: Session) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    job = jobs.get(job_id)
    assert job is not None
    jobs.request_cancel(job)
    assert job.status == "cancelled" and job.finished_at is not None
    assert jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3) is None


def test_every_visible_change_bumps_the_revision(session: Session) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    start = jobs.revision(job_id)
    assert start is not None
    jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3)
    jobs.progress(job_id, 1, stage="training", progress=0.2)
    assert jobs.revision(job_id) == start + 2


def test_the_core_read_of_a_job_matches_the_orm_row_and_keeps_tenants_apart(
    session: Session,
) -> None:
    from api.services.jobs import job_view
    from models.job_repository import read_job_row

    jobs = JobRepository(session)
    job_id = _job(session)
    jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3)
    jobs.progress(job_id, 1, stage="training", progress=0.5, metrics={"kd_loss": 0.25})
    session.commit()
    job = jobs.get(job_id)
    assert job is not None
    with session.get_bind().connect() as conn:
        row = read_job_row(conn, job.tenant_id, job_id)
        other = read_job_row(conn, "tnt_someone_else", job_id)
    assert other is None
    assert row is not None and row.revision == job.revision
    assert job_view(row) == job_view(job)
    assert job_view(row)["metrics"] == {"kd_loss": 0.25}
    assert job_view(row)["started_at"].tzinfo is not None


def _record(epoch: int) -> dict[str, object]:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "soft_loss": 1.0 / epoch,
        "hard_loss": None,
        "eval_agreement": None,
        "learning_rate": 0.01,
        "seconds": 0.5,
    }


def test_a_resumed_attempt_stores_only_the_epochs_no_attempt_stored(session: Session) -> None:
    """Attempt 1 stored epochs 1-2 and was killed after a checkpoint that had finished 3;
    attempt 2 gets all three records from the checkpoint and adds epoch 3 alone. A fenced
    (taken-over) attempt adds nothing."""
    jobs, history = JobRepository(session), HistoryRepository(session)
    job_id = _job(session)
    assert jobs.claim(job_id, worker="a", lease=timedelta(seconds=-1), max_attempts=3) == 1
    assert history.add_epoch(job_id, 1, _record(1)) and history.add_epoch(job_id, 1, _record(2))
    assert jobs.claim(job_id, worker="b", lease=LEASE, max_attempts=3) == 2
    assert not history.add_missing_epochs(job_id, 1, [_record(4)])
    assert history.add_missing_epochs(job_id, 2, [_record(1), _record(2), _record(3)])
    session.commit()
    rows = [(row.epoch, row.attempt) for row in history.epochs(job_id)]
    assert rows == [(1, 1), (2, 1), (3, 2)]


def test_a_released_job_is_queued_with_its_reason_and_the_next_claim_is_a_new_attempt(
    session: Session,
) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    assert jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3) == 1
    assert jobs.release(job_id, 1, reason="worker_stopped")
    assert not jobs.release(job_id, 1)  # once
    session.commit()
    job = jobs.get(job_id)
    assert job is not None and job.status == "queued" and job.lease_expires_at is None
    events, _ = HistoryRepository(session).events(job_id, limit=50, cursor=None)
    assert [(e.attempt, e.data) for e in events if e.kind == "queued"][-1] == (
        1,
        {"reason": "worker_stopped"},
    )
    assert jobs.claim(job_id, worker="b", lease=LEASE, max_attempts=3) == 2
    assert not jobs.progress(job_id, 1, stage="training", progress=0.5)


def test_a_job_with_a_cancel_asked_is_not_released_to_a_queue_that_would_never_run_it(
    session: Session,
) -> None:
    jobs = JobRepository(session)
    job_id = _job(session)
    assert jobs.claim(job_id, worker="a", lease=LEASE, max_attempts=3) == 1
    job = jobs.get(job_id)
    assert job is not None
    jobs.request_cancel(job)
    assert not jobs.release(job_id, 1, reason="worker_stopped")
    assert jobs.cancel_running(job_id, 1)
    session.commit()
    session.expire_all()
    assert (job := jobs.get(job_id)) is not None and job.status == "cancelled"
