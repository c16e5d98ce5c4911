"""A job's time limit is the run's own deadline, checked at every poll; Celery's soft-limit
signal is only the backstop, and the store copies that tolerate any failure let it through."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from core.contracts import DistillRequest
from core.queue import SOFT_LIMIT_MARGIN_S, celery_config
from core.settings import get_settings
from worker.pipeline import Claimed, PastTimeLimit, Run


def _run(tmp_path: Path, limit_s: int) -> Run:
    request = DistillRequest.model_construct(
        workdir=str(tmp_path / "job" / "engine"), cache_dir=str(tmp_path / "cache")
    )
    settings = get_settings().model_copy(update={"job_soft_time_limit_s": limit_s})
    return Run(Claimed("job_t", 1, "tenant", request), settings)


def test_the_run_stops_itself_at_its_deadline(tmp_path: Path, db: str) -> None:
    assert _run(tmp_path, 3600)._tick(tmp_path) is True  # well inside: polls as usual
    with pytest.raises(PastTimeLimit):
        _run(tmp_path, 0)._tick(tmp_path)


def test_a_store_copy_swallows_its_own_failure_but_not_the_time_limit(tmp_path: Path) -> None:
    run = _run(tmp_path, 3600)

    def broken_copy() -> None:
        raise OSError("the store is away")

    def signalled() -> None:
        raise SoftTimeLimitExceeded()

    run._mirror(broken_copy)  # logged; the job goes on
    with pytest.raises(SoftTimeLimitExceeded):
        run._mirror(signalled)


def test_celerys_soft_limit_comes_after_the_runs_own() -> None:
    settings = get_settings().model_copy(update={"job_soft_time_limit_s": 60})
    config = celery_config(settings)
    assert config["task_soft_time_limit"] == 60 + SOFT_LIMIT_MARGIN_S
    assert config["task_time_limit"] > config["task_soft_time_limit"]
