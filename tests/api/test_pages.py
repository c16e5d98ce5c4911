"""The job pages in a real headless Chromium (every host but 127.0.0.1 unreachable), against a
live server, real workers, Postgres and Redis: the key typed once (Enter submits), live
progress over the fetch()-read event stream, the curves from the stored epochs, the report
as a teacher-vs-student table, the download buttons, the list. A screenshot of the finished
job page is kept under ``bench/out/`` (git-ignored) and its path printed."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _body, _finished
from tests.api.test_docs import (  # noqa: F401 - fixtures, reused
    _assert_all_local,
    _close,
    _DevTools,
    _open_page,
    browser,
    live_server,
)
from tests.conftest import DEV_KEY, ROOT, wait_for

SCREENSHOT = ROOT / "bench" / "out" / "job-page.png"
KEY_FORM_SHOWN = "document.getElementById('key-form')?.hidden === false"
LONG = {"training": {"epochs": 25, "batch_size": 32}}


@pytest.fixture
def client(jobs_client: TestClient) -> TestClient:
    return jobs_client


def test_pages_are_self_contained_and_locked_down(live_server: str) -> None:  # noqa: F811
    with httpx.Client(base_url=live_server, trust_env=False) as http:
        page = http.get("/jobs/job_x")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "http" not in csp
        assert "job_x" not in page.text  # the id is read by the script, never echoed
        lowered = page.text.lower()
        assert "http://" not in lowered and "https://" not in lowered
        assert 'type="password"' in page.text
        for asset in ("/static/pages/jobs.js", "/static/pages/jobs.css"):
            assert http.get(asset).status_code == 200
        assert "/jobs" not in http.get("/openapi.json").json()["paths"]


def _wait(browser: _DevTools, session: str, expression: str, what: str, timeout: float) -> Any:  # noqa: F811
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.evaluate(session, expression)
        if value:
            return value
        time.sleep(0.2)
    html = browser.evaluate(session, "document.documentElement.outerHTML")
    raise AssertionError(f"timed out waiting for {what}; page:\n{html[:4000]}")


def _type_key_and_press_enter(browser: _DevTools, session: str) -> None:  # noqa: F811
    """Real input events: the text goes into the focused password field, Enter submits."""
    assert browser.evaluate(session, "document.activeElement.id") == "api-key"
    assert browser.evaluate(session, "document.activeElement.type") == "password"
    browser.send("Input.insertText", {"text": DEV_KEY}, session)
    for kind in ("keyDown", "keyUp"):
        browser.send(
            "Input.dispatchKeyEvent",
            {
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            },
            session,
        )


def open_finished_job_page(browser: _DevTools, live_server: str, job_id: str) -> str:  # noqa: F811
    """A finished job's page in a fresh tab, the key typed in, the report shown: the tab's
    session (close it with ``_close``)."""
    session, _, _ = _open_page(
        browser, f"{live_server}/jobs/{job_id}", KEY_FORM_SHOWN, "the key form"
    )
    _type_key_and_press_enter(browser, session)
    _wait(browser, session, "document.getElementById('report').hidden === false", "the report", 30)
    return session


@pytest.mark.slow
def test_job_page_follows_a_job_live_then_shows_curves_report_and_downloads(
    client: TestClient,
    inputs: dict[str, str],
    gpu_worker: object,
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    job = client.post("/v1/jobs", json=_body(inputs, **LONG)).json()
    wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["stage"] == "training", 180)

    session, _, _ = _open_page(
        browser,
        f"{live_server}/jobs/{job['id']}",
        KEY_FORM_SHOWN,
        "the key form",
    )
    try:
        _type_key_and_press_enter(browser, session)
        # While it runs: the status from the stream, with the live marker on.
        _wait(
            browser,
            session,
            "document.getElementById('job-status').textContent === 'running'"
            " && !document.getElementById('job-live').hidden",
            "the running job",
            60,
        )
        assert browser.evaluate(session, "document.getElementById('api-key').value") == ""
        stored = browser.evaluate(session, "sessionStorage.getItem('stillhouse.apiKey')")
        assert stored == DEV_KEY
        _wait(
            browser,
            session,
            "document.querySelectorAll('#report-table tbody tr').length === 10",
            "the report after the final status event",
            300,
        )
        finished = _finished(client, job["id"])
        assert finished["status"] == "succeeded", finished["error"]
        _check_report_table(browser, session, finished["report"])
        _check_curves(browser, session, epochs=LONG["training"]["epochs"])
        buttons = browser.evaluate(
            session,
            "Array.from(document.querySelectorAll('#downloads button')).map(b => b.dataset.format)",
        )
        assert sorted(buttons) == [
            "onnx",
            "onnx_fp16",
            "onnx_int8",
            "safetensors",
            "torch_export",
        ]
        history = browser.evaluate(session, "document.getElementById('history').textContent")
        assert "started (attempt 1)" in history and "checkpoints (attempt 1)" in history
        assert history.rstrip().endswith("succeeded (attempt 1)")
        events = [e for e in browser.events if e.get("sessionId") == session]
        _assert_all_local(events, live_server)
        _check_stream_was_fetched_with_the_key(events, job["id"])
        _screenshot(browser, session)

        browser.send("Page.navigate", {"url": f"{live_server}/jobs"}, session)
        link = _wait(
            browser,
            session,
            "Array.from(document.querySelectorAll('#jobs-table a')).map(a => a.textContent)",
            "the jobs list",
            30,
        )
        assert job["id"] in link  # the key is kept for the tab: no second prompt
        assert browser.evaluate(session, "document.getElementById('key-form').hidden") is True
    finally:
        _close(browser, session)


def _check_report_table(browser: _DevTools, session: str, report: dict[str, Any]) -> None:  # noqa: F811
    rows = browser.evaluate(
        session,
        "Array.from(document.querySelectorAll('#report-table tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))",
    )
    table = {name: (teacher, student) for name, teacher, student in rows}
    teacher, student = report["teacher"], report["student"]
    assert table["Parameters"] == (f"{teacher['parameters']:,}", f"{student['parameters']:,}")
    assert table["Size at fp32"][1] == f"{student['size_bytes_fp32'] / 1e6:.3f} MB"
    assert table["Size at fp16"][0] == f"{teacher['size_bytes_fp16'] / 1e6:.3f} MB"
    assert table["Agreement with the teacher (top-1)"][1] == (
        f"{100 * report['agreement_top1']:.2f} %"
    )
    assert table["Accuracy (eval labels)"][1] == f"{100 * report['student_accuracy']:.2f} %"
    assert table["Compression (parameters)"][1].endswith("× smaller")
    for name in ("Latency, batch of 1", "Throughput", "KL(teacher ‖ student), T = 1"):
        assert any(ch.isdigit() for ch in table[name][1]), (name, table[name])
    assert table["Speedup (throughput)"][1].endswith("×")


def _check_curves(browser: _DevTools, session: str, epochs: int) -> None:  # noqa: F811
    paths = browser.evaluate(
        session,
        "Array.from(document.querySelectorAll('.chart svg path.series'))"
        ".map(p => [p.closest('.chart').id, p.dataset.name, p.getAttribute('d')])",
    )
    names = {(chart, name) for chart, name, _ in paths}
    # The transfer set has no labels: no hard-loss curve.
    assert names == {
        ("loss-chart", "train loss"),
        ("loss-chart", "soft (KD) loss"),
        ("agreement-chart", "top-1 agreement"),
    }
    for _, _, d in paths:
        assert d.count("L") == epochs - 1, d  # one point per epoch
    boxes = browser.evaluate(
        session,
        "Array.from(document.querySelectorAll('.chart svg'))"
        ".map(s => { const b = s.getBoundingClientRect(); return [b.width, b.height]; })",
    )
    assert len(boxes) == 2 and all(w > 200 and h > 100 for w, h in boxes)


def _check_stream_was_fetched_with_the_key(events: list[dict[str, Any]], job_id: str) -> None:
    sent = [
        e["params"]["request"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["request"]["url"].endswith(f"/v1/jobs/{job_id}/events")
    ]
    assert sent, "the page never opened the event stream"
    headers = {k.lower(): v for k, v in sent[0]["headers"].items()}
    assert headers["accept"] == "text/event-stream"
    assert headers["authorization"] == f"Bearer {DEV_KEY}"


def _screenshot(browser: _DevTools, session: str) -> Path:  # noqa: F811
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1200, "height": 1500, "deviceScaleFactor": 1, "mobile": False},
        session,
    )
    time.sleep(0.3)
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\njob page screenshot: {SCREENSHOT}")  # noqa: T201
    return SCREENSHOT


def test_the_key_is_asked_again_when_refused(
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
    client: TestClient,
) -> None:
    session, _, _ = _open_page(
        browser,
        f"{live_server}/jobs",
        "document.getElementById('key-form')?.hidden === false",
        "key form",
    )
    try:
        browser.evaluate(session, "document.getElementById('api-key').value = 'sh_wrong'")
        browser.evaluate(session, "document.getElementById('key-form').requestSubmit()")
        message = _wait(
            browser,
            session,
            "!document.getElementById('key-error').hidden"
            " && document.getElementById('key-error').textContent",
            "the refusal",
            30,
        )
        assert "401" in message
        assert browser.evaluate(session, "sessionStorage.getItem('stillhouse.apiKey')") is None
    finally:
        _close(browser, session)


def _sweep_report() -> dict[str, Any]:
    """A sweep's report with a baseline, as the engine writes it (valid against the
    contract): three candidates, the second chosen, the third dominated by the first."""
    from core.contracts import Report

    measure = {"size_bytes_fp32": 4000, "size_bytes_fp16": 2000, "throughput_per_s": 5e4}

    def candidate(i: int, ratio: float, params: int, latency: float, agree: float) -> dict:
        return {
            "index": i,
            "temperature": 4.0,
            "alpha": 0.1,
            "size_ratio": ratio,
            "parameters": params,
            "latency_ms_batch1": latency,
            "agreement_top1": agree,
            "student_accuracy": agree - 0.01,
            "kl_divergence": 0.05,
            "pareto": i != 2,
        }

    candidates = [
        candidate(0, 0.05, 1000, 0.010, 0.950),
        candidate(1, 0.3, 6000, 0.020, 0.981),
        candidate(2, 0.3, 6000, 0.030, 0.940),
    ]
    chosen = candidates[1]
    report = {
        "teacher": {"parameters": 60000, "latency_ms_batch1": 0.5, **measure},
        "student": {"parameters": 6000, "latency_ms_batch1": 0.02, **measure},
        "compression_ratio": 10.0,
        "speedup": 3.0,
        "agreement_top1": chosen["agreement_top1"],
        "kl_divergence": 0.05,
        "teacher_accuracy": 0.99,
        "student_accuracy": chosen["student_accuracy"],
        "eval_samples": 719,
        "device": "cpu",
        "soft_labels": "cached",
        "timings_s": {"training": 1.0},
        "candidates": candidates,
        "chosen": 1,
        "baseline": {
            "parameters": 6000,
            "latency_ms_batch1": 0.02,
            "agreement_top1": 0.9611,
            "student_accuracy": 0.9502,
            "kl_divergence": 0.09,
        },
        "distillation_gain": {
            "agreement_top1": chosen["agreement_top1"] - 0.9611,
            "student_accuracy": chosen["student_accuracy"] - 0.9502,
            "kl_divergence": 0.05 - 0.09,
        },
        "variants": [
            variant("onnx", 24_000, 0.981, None, None),
            variant("onnx_fp16", 12_500, 0.981, 0.0, True),
            variant("onnx_int8", 7_000, 0.962, 0.019, False),
        ],
    }
    return Report.model_validate(report).model_dump(mode="json")


def variant(
    fmt: str, size: int, agree: float, loss: float | None, within: bool | None
) -> dict[str, object]:
    return {
        "format": fmt,
        "size_bytes": size,
        "latency_ms_batch1": 0.05,
        "throughput_per_s": 64000.0,
        "throughput_batch": 32,
        "agreement_top1": agree,
        "student_accuracy": agree - 0.01,
        "agreement_loss": loss,
        "within_margin": within,
    }


def test_job_page_shows_a_sweeps_candidates_and_what_distillation_bought(
    client: TestClient,
    inputs: dict[str, str],
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    """The page's rendering of a sweep's report. The report is written into the job's row
    (no worker runs here; tests/api/test_sweep.py checks what real sweeps report)."""
    from datetime import timedelta

    from core.db import session_scope
    from models.job_repository import JobRepository

    job_id = client.post("/v1/jobs", json=_body(inputs)).json()["id"]
    report = _sweep_report()
    with session_scope() as session:
        jobs = JobRepository(session)
        attempt = jobs.claim(job_id, worker="page-test", lease=timedelta(minutes=1), max_attempts=3)
        assert attempt is not None
        assert jobs.finish(job_id, attempt, report=report, artifacts={}, metrics={})
    session = open_finished_job_page(browser, live_server, job_id)
    try:
        rows = browser.evaluate(
            session,
            "Array.from(document.querySelectorAll('#candidates-table tbody tr')).map(r => "
            "[r.dataset.pareto, r.className, Array.from(r.cells).map(c => c.textContent)])",
        )
        assert [(pareto, cls) for pareto, cls, _ in rows] == [
            ("true", ""),
            ("true", "chosen"),
            ("false", ""),
        ]
        cells = [c for _, _, c in rows]
        assert cells[0][:9] == [
            "◆ 0", "4", "0.1", "0.05", "1,000", "0.01 ms", "95.00 %", "94.00 %", "0.05"
        ]  # fmt: skip
        assert cells[1][4] == "6,000" and cells[1][6] == "98.10 %"
        assert cells[1][9].startswith("chosen") and cells[2][0] == "2"
        baseline = browser.evaluate(
            session,
            "Array.from(document.querySelectorAll('#baseline-table tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))",
        )
        assert baseline[0] == ["Accuracy (eval labels)", "95.02 %", "97.10 %", "+2.08 points"]
        assert baseline[1] == [
            "Agreement with the teacher (top-1)", "96.11 %", "98.10 %", "+1.99 points"
        ]  # fmt: skip
        assert baseline[2] == [
            "KL(teacher ‖ student), T = 1 (lower is closer)",
            "0.09",
            "0.05",
            "-0.04",
        ]
        variants = browser.evaluate(
            session,
            "Array.from(document.querySelectorAll('#variants-table tbody tr')).map(r => "
            "[r.dataset.format, r.className, Array.from(r.cells).map(c => c.textContent)])",
        )
        assert [(f, cls) for f, cls, _ in variants] == [
            ("onnx", ""),
            ("onnx_fp16", ""),
            ("onnx_int8", "flagged"),
        ]
        assert variants[2][2] == [
            "onnx int8", "0.007 MB", "0.05 ms", "64,000 /s at 32", "96.20 %", "95.20 %",
            "1.90 points", "past the marginDownload",
        ]  # fmt: skip
        assert variants[0][2][6] == "–"
    finally:
        _close(browser, session)


# --- what a first-time user tripped on -----------------------------------------------------

SOFT_LABEL_KEY = "3f9a2b1c" * 8  # the soft labels' cache key: a sha256 in hex
LOSSES = [2.8666, 1.9017, 1.2391, 0.8123, 0.5377, 0.3902, 0.2711, 0.2044, 0.1702, 0.1417]


def _finished_job(client: TestClient, inputs: dict[str, str]) -> str:
    """A job finished as a worker finishes one (epoch rows, a soft-labels event, the final
    metrics and the report), written into its rows: no worker runs here."""
    from datetime import timedelta

    from core.db import session_scope
    from core.enums import JobEventKind
    from models.history_repository import HistoryRepository
    from models.job_repository import JobRepository

    job_id: str = client.post("/v1/jobs", json=_body(inputs)).json()["id"]
    report = _sweep_report()
    with session_scope() as session:
        jobs = JobRepository(session)
        attempt = jobs.claim(job_id, worker="page-test", lease=timedelta(minutes=1), max_attempts=3)
        assert attempt is not None
        jobs.fenced_event(job_id, attempt, JobEventKind.SOFT_LABELS, key=SOFT_LABEL_KEY)
        for epoch, loss in enumerate(LOSSES, start=1):
            record = {
                "epoch": epoch,
                "train_loss": loss,
                "soft_loss": loss,
                "hard_loss": None,
                "eval_agreement": 0.7 + 0.028 * epoch,
                "learning_rate": 0.001,
                "seconds": 0.4,
            }
            assert HistoryRepository(session).add_epoch(job_id, attempt, record)
        metrics = {"agreement_top1": 0.9812, "student_accuracy": 0.9713, "train_loss": 0.1417}
        assert jobs.finish(job_id, attempt, report=report, artifacts={}, metrics=metrics)
    return job_id


def _texts(browser: _DevTools, session: str, selector: str) -> list[str]:  # noqa: F811
    return browser.evaluate(  # type: ignore[no-any-return]
        session,
        f"Array.from(document.querySelectorAll({selector!r})).map(e => e.textContent)",
    )


def test_the_jobs_list_shows_a_finished_jobs_agreement(
    client: TestClient,
    inputs: dict[str, str],
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    job_id = _finished_job(client, inputs)
    session, _, _ = _open_page(browser, f"{live_server}/jobs", KEY_FORM_SHOWN, "the key form")
    try:
        _type_key_and_press_enter(browser, session)
        row = _wait(
            browser,
            session,
            f"Array.from(document.querySelectorAll('#jobs-table tbody tr'))"
            f".filter(r => r.textContent.includes({job_id!r}))"
            f".map(r => Array.from(r.cells).map(c => c.textContent))[0]",
            "the finished job's row",
            30,
        )
        assert row[1] == "succeeded" and row[5] == "98.10 %"  # the report's agreement
    finally:
        _close(browser, session)


def test_a_finished_job_page_reads_as_percentages_round_ticks_and_plain_history(
    client: TestClient,
    inputs: dict[str, str],
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    job_id = _finished_job(client, inputs)
    session = open_finished_job_page(browser, live_server, job_id)
    try:
        _wait(browser, session, "document.querySelectorAll('.y-tick').length > 0", "ticks", 30)
        headline = dict(
            browser.evaluate(
                session,
                "Array.from(document.querySelectorAll('#job-metrics div'))"
                ".map(d => [d.dataset.name, d.querySelector('dd').textContent])",
            )
        )
        assert headline["agreement_top1"] == "98.12 %"
        assert headline["student_accuracy"] == "97.13 %"
        assert headline["train_loss"] == "0.1417"
        loss_ticks = _texts(browser, session, "#loss-chart .y-tick")
        assert loss_ticks == ["0", "1", "2", "3"]  # round values past the largest loss
        agreement_ticks = _texts(browser, session, "#agreement-chart .y-tick")
        assert agreement_ticks == ["0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]
        assert _texts(browser, session, "#loss-chart .x-tick") == ["1", "2", "4", "6", "8", "10"]
        history = browser.evaluate(session, "document.getElementById('history').textContent")
        assert SOFT_LABEL_KEY not in history and SOFT_LABEL_KEY[:8] not in history
        assert "soft labels computed and saved for reuse (attempt 1)" in history
        assert browser.evaluate(session, "document.getElementById('cancel-job').hidden") is True
    finally:
        _close(browser, session)


def test_a_queued_job_can_be_cancelled_from_its_page(
    client: TestClient,
    inputs: dict[str, str],
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    job_id = client.post("/v1/jobs", json=_body(inputs)).json()["id"]  # no GPU worker: queued
    session, _, _ = _open_page(
        browser, f"{live_server}/jobs/{job_id}", KEY_FORM_SHOWN, "the key form"
    )
    try:
        _type_key_and_press_enter(browser, session)
        _wait(
            browser,
            session,
            "document.getElementById('job-status').textContent === 'queued'"
            " && document.getElementById('cancel-job').hidden === false",
            "the queued job with its cancel button",
            30,
        )
        browser.evaluate(session, "document.getElementById('cancel-job').click()")
        _wait(
            browser,
            session,
            "document.getElementById('job-status').textContent === 'cancelled'"
            " && document.getElementById('cancel-job').hidden",
            "the cancelled job",
            30,
        )
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    finally:
        _close(browser, session)


def test_an_unknown_job_id_says_there_is_no_such_job(
    client: TestClient,
    browser: _DevTools,  # noqa: F811
    live_server: str,  # noqa: F811
) -> None:
    session, _, _ = _open_page(
        browser, f"{live_server}/jobs/job_nosuchjob", KEY_FORM_SHOWN, "the key form"
    )
    try:
        _type_key_and_press_enter(browser, session)
        message = _wait(
            browser,
            session,
            "!document.getElementById('not-found').hidden"
            " && document.getElementById('not-found').textContent",
            "the no-such-job message",
            30,
        )
        assert "No such job" in message and "job_nosuchjob" in message
        assert browser.evaluate(session, "document.getElementById('job-view').hidden") is True
        assert browser.evaluate(session, "document.getElementById('page-error').hidden") is True
    finally:
        _close(browser, session)
