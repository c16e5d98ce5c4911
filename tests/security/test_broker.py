"""The broker carries JSON task messages only, and a worker takes no remote-control
commands: anyone able to write to Redis cannot stop or reconfigure it."""

from __future__ import annotations

import time

import pytest

from tests.conftest import DATA_DIR, start_worker, stop_process, wait_for
from worker.celery_app import app

# Worker processes: the whole suite runs these, the fast lane does not.
pytestmark = pytest.mark.slow


def test_broadcast_shutdown_does_not_stop_a_worker(pg_database: str) -> None:
    log = DATA_DIR / "worker-remote-control.log"
    queue = "remote-control-probe"  # its own queue: other workers of the session take no part
    proc = start_worker(queue, "remote-control", log.name)
    try:
        wait_for(lambda: log.exists() and "ready." in log.read_text(), timeout=120)
        assert app.control.ping(timeout=2.0) == []  # it does not even answer a ping
        app.control.broadcast("shutdown")
        time.sleep(5)  # a worker with remote control on stops within a second
        assert proc.poll() is None, log.read_text()[-2000:]
        # ...and it still does its work: a task published now is received.
        result = app.send_task(
            "stillhouse.validate_teacher", args=["tch_does_not_exist"], queue=queue
        )
        wait_for(lambda: result.id in log.read_text(), timeout=120)
    finally:
        stop_process(proc)


def test_only_json_is_accepted() -> None:
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == app.conf.result_serializer == "json"
    assert app.conf.event_serializer == "json"
    assert app.conf.worker_enable_remote_control is False
