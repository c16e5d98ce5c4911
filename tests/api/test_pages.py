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
        assert sorted(buttons) == ["onnx", "safetensors", "torch_export"]
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
