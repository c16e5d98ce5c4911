"""Log lines: JSON with the ids of the work in progress, the sweep's routine lines dropped,
and `stillhouse run`'s per-process prefixes."""

from __future__ import annotations

import json
import logging

from core.logs import ContextFilter, JsonFormatter, QuietSweep, log_context
from stillhouse_server.supervisor import PrefixedOutput


def _record(msg: str, args: object = None, name: str = "worker.pipeline") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    ContextFilter().filter(record)
    return record


def test_json_lines_carry_the_job_and_tenant_in_context() -> None:
    with log_context(job_id="job_1", tenant_id="ten_1"):
        inside = json.loads(JsonFormatter().format(_record("job %s: attempt %s", ("job_1", 2))))
    outside = json.loads(JsonFormatter().format(_record("idle")))
    assert inside["message"] == "job job_1: attempt 2"
    assert (inside["job_id"], inside["tenant_id"], inside["level"]) == ("job_1", "ten_1", "INFO")
    assert inside["logger"] == "worker.pipeline" and inside["time"].endswith("+00:00")
    assert "job_id" not in outside and "tenant_id" not in outside


def test_an_exception_stays_inside_its_json_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, True)  # type: ignore[arg-type]
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: bad" in json.loads(line)["exception"]


def test_the_sweeps_routine_lines_are_dropped_and_others_kept() -> None:
    quiet = QuietSweep(frozenset({"stillhouse.requeue_stale", "stillhouse.deliver_webhooks"}))
    beat = _record("Scheduler: Sending due task %s (%s)", ("requeue", "stillhouse.requeue_stale"))
    received = _record("Task %(name)s[%(id)s] received", ({"name": "stillhouse.requeue_stale"},))
    other = _record("Task %(name)s[%(id)s] received", ({"name": "stillhouse.run_job", "id": "1"},))
    found = _record("sweep: re-queued %s, ended %s (%s)", (1, 0, "job_1"))
    assert [quiet.filter(r) for r in (beat, received, other, found)] == [False, False, True, True]


def test_run_prefixes_each_process_and_tags_json_lines() -> None:
    text = PrefixedOutput(["api", "worker-gpu"], "text")
    assert text.line("api", b"INFO: started\n") == b"api        | INFO: started\n"
    js = PrefixedOutput(["api", "worker-gpu"], "json")
    tagged = json.loads(js.line("worker-gpu", b'{"message": "hi", "job_id": "j"}\n'))
    assert tagged == {"service": "worker-gpu", "message": "hi", "job_id": "j"}
    assert js.line("api", b"not json\n") == b"api        | not json\n"
