"""A transient fault gives the job back for a retry; on the last attempt, when nothing could
claim it again, the job fails saying what went wrong instead of waiting queued for good."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from core.settings import get_settings
from models.job_repository import JobRepository
from tests.models.test_job_repository import _job
from worker.pipeline import _give_back


def test_a_transient_fault_releases_the_job_then_fails_it_on_the_last_attempt(
    session: Session,
) -> None:
    settings = get_settings().model_copy(update={"max_attempts": 2})
    jobs = JobRepository(session)
    job_id = _job(session)
    fault = FileNotFoundError(2, "No such file or directory")
    assert jobs.claim(job_id, worker="a", lease=timedelta(seconds=30), max_attempts=2) == 1
    session.commit()
    _give_back(job_id, 1, settings, fault)
    session.expire_all()
    job = jobs.get(job_id)
    assert job is not None and job.status == "queued"
    assert jobs.claim(job_id, worker="a", lease=timedelta(seconds=30), max_attempts=2) == 2
    session.commit()
    _give_back(job_id, 2, settings, fault)
    session.expire_all()
    job = jobs.get(job_id)
    assert job is not None and job.status == "failed" and job.error is not None
    assert job.error["code"] == "internal"
    assert "2 attempts failed; the last with FileNotFoundError" in job.error["message"]
