"""A worker whose host cannot build the sandbox runs no job: it fails at once, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.errors import ErrorCode
from tests.api.conftest import (  # noqa: F401 - fixtures, reused
    _body,
    _finished,
    inputs,
    jobs_client,
    shared_client,
)
from tests.conftest import DATA_DIR, start_worker, stop_process

# Worker processes: the whole suite runs these, the fast lane does not.
pytestmark = pytest.mark.slow


def test_a_job_fails_with_sandbox_unavailable_on_a_host_without_bwrap(  # noqa: F811
    jobs_client: TestClient,  # noqa: F811
    inputs: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    worker = start_worker(
        "gpu", "gpu-no-bwrap", "worker-gpu-no-bwrap.log", env={"PATH": str(no_tools)}
    )
    try:
        job = jobs_client.post("/v1/jobs", json=_body(inputs)).json()
        failed = _finished(jobs_client, job["id"], timeout=120)
    finally:
        stop_process(worker)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == ErrorCode.SANDBOX_UNAVAILABLE, failed["error"]
    assert "STILLHOUSE_SANDBOX=none" in failed["error"]["message"]
    assert "WITHOUT a sandbox" not in (DATA_DIR / "worker-gpu-no-bwrap.log").read_text()
