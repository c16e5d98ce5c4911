"""One real service (``stillhouse run``: the API, a validate and a gpu worker, SQLite and the
filesystem broker) for every quality benchmark's smoke run in this session, instead of one
started and stopped by each of them: their subprocesses find it through
``STILLHOUSE_BENCH_SERVICE_URL`` (bench/service.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import DATA_DIR


@pytest.fixture(scope="session")
def shared_service() -> Iterator[dict[str, str]]:
    """The environment of a benchmark subprocess that drives the session's service."""
    from bench.service import KEY, SHARED_KEY, SHARED_URL, Service

    with pytest.MonkeyPatch.context() as mp:
        # The service is a user's: none of the test session's settings (short leases,
        # checkpoints every 5 steps, its database) leak into it, and none is shared already.
        for name in [n for n in os.environ if n.startswith("STILLHOUSE_")]:
            mp.delenv(name)
        svc = Service(DATA_DIR / "bench-service", threads=1, shared=False).__enter__()
    try:
        yield {**os.environ, SHARED_URL: svc.url, SHARED_KEY: KEY}
        assert svc.proc is not None and svc.proc.poll() is None, "the shared service died"
    finally:
        svc.__exit__()
