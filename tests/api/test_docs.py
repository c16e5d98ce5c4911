"""/docs (Swagger UI) and /redoc work with no internet access: the app serves every asset.

Two layers of proof:
1. The HTML of both pages only references same-origin URLs, and those assets are served.
2. A real headless Chromium renders both pages from a live uvicorn server while
   - name resolution of every host but 127.0.0.1 is made to fail
     (``--host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"``), so a page that needed
     a CDN could not render, and
   - every request the pages make is recorded through the DevTools protocol and checked to be
     on the test server (or a ``data:``/``blob:`` URL, or refused by the pages' CSP before
     it was sent: ReDoc's hard-coded logo URL),
   and Swagger UI's "Try it out" calls /healthz. A negative control shows that FastAPI's stock
   CDN page stays blank under the same settings.
The browser tests skip only when Chromium is not installed (``.ci/ensure-chromium.sh``
installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from websockets.sync.client import ClientConnection, connect

import api.docs
from api.app import create_app
from api.docs import install_docs
from api.serve import uvicorn_config
from tests.conftest import DEV_KEY

CHROMIUM = os.environ.get("STILLHOUSE_CHROMIUM", "/usr/bin/chromium")
APP_TITLE = "Stillhouse"
RENDER_TIMEOUT_S = 30.0

_CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
    ".json": {"application/json"},
}


def _make_app() -> FastAPI:
    """The real app, plus one control page: FastAPI's stock, CDN-based Swagger UI.

    uvicorn runs it with lifespan="off": the docs need no database, and the lifespan's only
    job (creating the bootstrap API key) would need one.
    """
    app = create_app()

    @app.get("/cdn-docs", include_in_schema=False)
    async def cdn_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="CDN control")

    return app


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    """Serve the app with uvicorn on 127.0.0.1 and a free port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(
        _make_app(), log_level="warning", access_log=False, ws="none", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, trust_env=False, timeout=10) as client:
        yield client


# --- 1. The HTML references only same-origin assets -----------------------------------------


class _UrlCollector(HTMLParser):
    """Collects every URL-valued attribute of the page."""

    URL_ATTRS = {"src", "href", "spec-url", "srcset", "action", "data", "poster"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.URL_ATTRS and value:
                self.urls.append((tag, name, value))


def _page_urls(html: str) -> list[tuple[str, str, str]]:
    parser = _UrlCollector()
    parser.feed(html)
    parser.close()
    return parser.urls


def _assert_same_origin(html: str, base: str) -> list[str]:
    """Every URL in the page is relative or on `base`; returns the resolved asset URLs."""
    lowered = html.lower()
    assert "cdn" not in lowered
    assert "googleapis" not in lowered and "fonts.g" not in lowered
    assert "http://" not in lowered and "https://" not in lowered and "//" + "cdn" not in lowered
    origin = urlsplit(base)
    resolved = []
    for tag, attr, value in _page_urls(html):
        url = urlsplit(urljoin(base + "/docs", value))
        assert (url.scheme, url.netloc) == (origin.scheme, origin.netloc), (tag, attr, value)
        resolved.append(url.geturl())
    return resolved


@pytest.mark.parametrize(
    ("page", "expected_refs"),
    [
        (
            "/docs",
            {
                "/static/docs/swagger-ui-bundle.js",
                "/static/docs/swagger-ui.css",
                "/static/docs/favicon.png",
            },
        ),
        (
            "/redoc",
            {"/static/docs/redoc.standalone.js", "/static/docs/favicon.png", "/openapi.json"},
        ),
    ],
)
def test_docs_html_references_only_local_assets(
    http: httpx.Client, live_server: str, page: str, expected_refs: set[str]
) -> None:
    response = http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _assert_same_origin(response.text, live_server)
    assert {urlsplit(u).path for u in urls} == expected_refs
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http" not in csp and "*" not in csp
    if page == "/docs":
        # Swagger UI gets the schema URL from its inline config, not from an attribute.
        assert "url: '/openapi.json'" in response.text
        assert '"validatorUrl": null' in response.text  # no call to validator.swagger.io
    for path in expected_refs:
        asset = http.get(path)
        assert asset.status_code == 200, path
        content_type = asset.headers["content-type"].split(";")[0].strip()
        assert content_type in _CONTENT_TYPES[Path(path).suffix], (path, content_type)
        assert len(asset.content) > 0


def test_vendored_versions(http: httpx.Client) -> None:
    # Swagger UI 5 is needed to render the OpenAPI 3.1 that FastAPI emits (4.x cannot).
    assert 'PACKAGE_VERSION:"5.35.0"' in http.get("/static/docs/swagger-ui-bundle.js").text
    assert 'ReDoc Version: ","2.5.4"' in http.get("/static/docs/redoc.standalone.js").text
    versions = (Path(api.docs.__file__).parent / "static" / "docs" / "VERSIONS.md").read_text()
    assert "| 5.35.0 |" in versions and "| 2.5.4 |" in versions
    assert http.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_oauth2_redirect_page_is_local(http: httpx.Client, live_server: str) -> None:
    response = http.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert _page_urls(response.text) == []
    assert "http://" not in response.text and "https://" not in response.text


def test_docs_pages_are_not_in_the_schema(http: httpx.Client) -> None:
    schema_paths = set(http.get("/openapi.json").json()["paths"])
    assert "/healthz" in schema_paths
    assert not schema_paths & {"/docs", "/docs/oauth2-redirect", "/redoc"}


def test_install_docs_refuses_builtin_docs() -> None:
    with pytest.raises(ValueError, match="docs_url=None"):
        install_docs(FastAPI())


# --- 2. A real browser renders the pages with every other host unreachable ------------------


class _DevTools:
    """A minimal Chrome DevTools Protocol client over the browser's websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + RENDER_TIMEOUT_S
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, session: str, expression: str, what: str) -> Any:
        deadline = time.monotonic() + RENDER_TIMEOUT_S
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                return value
            time.sleep(0.1)
        html = self.evaluate(session, "document.documentElement.outerHTML")
        raise AssertionError(f"timed out waiting for {what}; page:\n{html[:3000]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[_DevTools]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (run .ci/ensure-chromium.sh)")
    # Chromium's helper processes can outlive the browser process for a moment and still
    # write into the profile; the whole process group is stopped before the folder goes.
    with tempfile.TemporaryDirectory(
        prefix="stillhouse-chromium-", ignore_cleanup_errors=True
    ) as profile:
        args = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            # Any host but 127.0.0.1 fails to resolve: a page needing a CDN cannot render.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            active_port = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (active_port.exists() and len(active_port.read_text().split()) >= 2):
                if proc.poll() is not None:
                    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"chromium exited with {proc.returncode}: {stderr[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port, path = active_port.read_text().split()[:2]
            url = f"ws://127.0.0.1:{port}{path}"
            with connect(url, max_size=None, proxy=None, open_timeout=10) as ws:
                yield _DevTools(ws)
        finally:
            _stop_group(proc)
            if proc.stderr is not None:
                proc.stderr.close()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Chromium's process group, then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break  # the group is empty: nothing writes into the profile any more
        time.sleep(0.05)
    proc.wait(10)


def _open_page(
    browser: _DevTools, url: str, ready_expression: str, what: str
) -> tuple[str, Any, list[dict[str, Any]]]:
    """Open `url` in a fresh tab with network logging on; wait until `ready_expression`."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    browser.events.clear()
    for domain in ("Network.enable", "Page.enable", "Runtime.enable"):
        browser.send(domain, session=session)
    browser.send("Page.navigate", {"url": url}, session)
    value = browser.wait_for(session, ready_expression, what)
    # Let late requests (lazy chunks, favicon, fonts) show up before reading the log.
    browser.wait_for(session, "document.readyState === 'complete'", "load")
    time.sleep(0.5)
    browser.evaluate(session, "1")
    events = [e for e in browser.events if e.get("sessionId") == session]
    return session, value, events


# Off-origin URLs that the vendored bundles hard-code and that the docs pages' CSP makes the
# browser refuse before sending (Network.loadingFailed with blockedReason "csp"). Anything
# else off-origin fails the test, blocked or not.
KNOWN_CSP_BLOCKED = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}  # ReDoc 2's side-menu logo


def _assert_all_local(events: list[dict[str, Any]], base: str) -> list[str]:
    """Every request the page made went to `base` (or stayed in the browser: data:, blob:)."""
    origin = urlsplit(base)
    sent = {
        e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
    }
    assert sent, "no network requests were recorded"
    failed = {
        e["params"]["requestId"]: e["params"]
        for e in events
        if e["method"] == "Network.loadingFailed"
    }
    csp_blocked = {
        sent[rid] for rid, f in failed.items() if f.get("blockedReason") == "csp" and rid in sent
    }
    assert csp_blocked <= KNOWN_CSP_BLOCKED, f"unexpected blocked requests: {csp_blocked}"
    for rid, url in sent.items():
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or url in csp_blocked:
            continue
        assert (parts.scheme, parts.hostname, parts.port) == (
            origin.scheme,
            origin.hostname,
            origin.port,
        ), f"request to another host: {url}"
        assert rid not in failed, f"failed load of {url}: {failed[rid]}"
    exceptions = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    assert not exceptions, f"page errors: {exceptions}"
    return list(sent.values())


def _close(browser: _DevTools, session: str) -> None:
    target = browser.send("Target.getTargetInfo", session=session)["targetInfo"]["targetId"]
    browser.send("Target.closeTarget", {"targetId": target})


def test_swagger_ui_renders_offline(browser: _DevTools, live_server: str) -> None:
    session, paths, events = _open_page(
        browser,
        live_server + "/docs",
        "Array.from(document.querySelectorAll('.opblock .opblock-summary-path'))"
        ".map(e => e.getAttribute('data-path') || e.textContent.trim())",
        "Swagger UI operations (.opblock)",
    )
    try:
        assert "/healthz" in paths
        title = browser.evaluate(session, "document.querySelector('.info .title')?.textContent")
        assert title and APP_TITLE in title
        assert browser.evaluate(session, "document.querySelectorAll('.errors-wrapper').length") == 0
        requested = _assert_all_local(events, live_server)
        for asset in ("/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css"):
            assert live_server + asset in requested
        assert live_server + "/openapi.json" in requested

        # The UI works, not only renders: "Try it out" on /healthz calls the API.
        browser.evaluate(
            session,
            "document.querySelector('.opblock-summary-path[data-path=\"/healthz\"]')"
            ".closest('.opblock-summary-control').click()",
        )
        browser.wait_for(session, "!!document.querySelector('.try-out__btn')", "Try it out")
        browser.evaluate(session, "document.querySelector('.try-out__btn').click()")
        browser.wait_for(session, "!!document.querySelector('.btn.execute')", "Execute")
        browser.evaluate(session, "document.querySelector('.btn.execute').click()")
        status = browser.wait_for(
            session,
            "document.querySelector('.live-responses-table tbody .response-col_status')"
            "?.textContent.trim()",
            "the live response",
        )
        assert status.startswith("200")
        body = browser.evaluate(
            session,
            "document.querySelector('.live-responses-table tbody .highlight-code pre')"
            "?.textContent",
        )
        assert body and json.loads(body) == {"status": "ok"}
        after = [e for e in browser.events if e.get("sessionId") == session]
        _assert_all_local(after, live_server)
    finally:
        _close(browser, session)


def test_redoc_renders_offline(browser: _DevTools, live_server: str) -> None:
    session, operations, events = _open_page(
        browser,
        live_server + "/redoc",
        "Array.from(document.querySelectorAll('[data-section-id^=\"operation/\"]'))"
        ".map(e => e.textContent)",
        "ReDoc operations",
    )
    try:
        assert any("/healthz" in text for text in operations), operations
        heading = browser.evaluate(session, "document.querySelector('.api-info h1')?.textContent")
        assert heading and APP_TITLE in heading
        requested = _assert_all_local(events, live_server)
        assert live_server + "/static/docs/redoc.standalone.js" in requested
        assert live_server + "/openapi.json" in requested
    finally:
        _close(browser, session)


def test_browser_cannot_reach_other_hosts(browser: _DevTools, live_server: str) -> None:
    """The control for the two tests above: outside hosts really are unreachable."""
    session, _, _ = _open_page(browser, live_server + "/healthz", "!!document.body", "healthz")
    try:

        def outcome(url: str) -> str:
            fetch = f"fetch({json.dumps(url)}).then(() => 'reached', () => 'blocked')"
            return str(browser.evaluate(session, fetch))

        assert outcome("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css") == (
            "blocked"
        )
        assert outcome("https://fonts.googleapis.com/css?family=Roboto") == "blocked"
        assert outcome(live_server + "/healthz") == "reached"
    finally:
        _close(browser, session)


def test_cdn_docs_do_not_render_here(browser: _DevTools, live_server: str) -> None:
    """The negative control: FastAPI's stock /docs page, which loads Swagger UI from a CDN,
    stays blank under the same browser settings, so the tests above do detect a CDN page."""
    session, _, events = _open_page(
        browser, live_server + "/cdn-docs", "document.readyState === 'complete'", "load"
    )
    try:
        time.sleep(2)
        assert browser.evaluate(session, "document.querySelectorAll('.opblock').length") == 0
        assert browser.evaluate(session, "typeof SwaggerUIBundle") == "undefined"
        cdn = [
            e["params"]
            for e in browser.events
            if e.get("sessionId") == session
            and e["method"] == "Network.loadingFailed"
            and e["params"].get("errorText") == "net::ERR_NAME_NOT_RESOLVED"
        ]
        assert len(cdn) >= 2, events  # the CDN's script and stylesheet
    finally:
        _close(browser, session)


# --- 3. The docs page as a working tool: Authorize, then "Try it out" on /v1 routes ---------


@pytest.fixture(scope="module")
def api_server(pg_database: str) -> Iterator[str]:
    """The real app with its database (lifespan on: the bootstrap key exists)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(create_app(), log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _type_into(browser: _DevTools, session: str, selector: str, text: str) -> None:
    """Focus a field, select what it holds and type over it, as a user would (React sees
    real input events)."""
    focus = "(e => { e.focus(); e.select && e.select(); })"
    browser.evaluate(session, f"{focus}(document.querySelector({json.dumps(selector)}))")
    browser.send("Input.insertText", {"text": text}, session)


def _operation(method: str, path: str) -> str:
    """A JS expression for the operation block of METHOD PATH."""
    return (
        f"document.querySelector('.opblock-{method} .opblock-summary-path"
        f"[data-path=\"{path}\"]').closest('.opblock')"
    )


def _try_it_out(browser: _DevTools, session: str, method: str, path: str, body: str | None) -> str:
    """Open the operation, "Try it out", optionally type a JSON body, Execute; the status."""
    block = _operation(method, path)
    browser.evaluate(session, f"{block}.querySelector('.opblock-summary-control').click()")
    browser.wait_for(session, f"!!{block}.querySelector('.try-out__btn')", "Try it out")
    browser.evaluate(session, f"{block}.querySelector('.try-out__btn').click()")
    browser.wait_for(session, f"!!{block}.querySelector('.btn.execute')", "Execute")
    if body is not None:
        block_id = browser.evaluate(session, f"{block}.id")
        _type_into(browser, session, f"#{block_id} textarea.body-param__text", body)
    browser.evaluate(session, f"{block}.querySelector('.btn.execute').click()")
    status: str = browser.wait_for(
        session,
        f"{block}.querySelector('.live-responses-table tbody .response-col_status')"
        "?.textContent.trim()",
        f"the live response of {method.upper()} {path}",
    )
    return status


def test_swagger_ui_authorizes_and_calls_v1_routes(browser: _DevTools, api_server: str) -> None:
    session, _, _ = _open_page(
        browser, api_server + "/docs", "!!document.querySelector('.btn.authorize')", "Authorize"
    )
    try:
        browser.evaluate(session, "document.querySelector('.btn.authorize').click()")
        browser.wait_for(session, "!!document.querySelector('#auth-bearer-value')", "key field")
        _type_into(browser, session, "#auth-bearer-value", DEV_KEY)
        browser.evaluate(session, "document.querySelector('.modal-btn.auth.authorize').click()")
        browser.wait_for(
            session, "document.querySelector('.modal-ux')?.textContent.includes('Authorized')",
            "Authorized",
        )  # fmt: skip
        browser.evaluate(session, "document.querySelector('.modal-btn.auth.btn-done').click()")

        assert _try_it_out(browser, session, "get", "/v1/jobs", None).startswith("200")
        missing = json.dumps({"teacher_ids": ["tch_missing"], "dataset_id": "ds_missing"})
        assert _try_it_out(browser, session, "post", "/v1/jobs", missing).startswith("422")
        shown = browser.evaluate(
            session,
            f"{_operation('post', '/v1/jobs')}"
            ".querySelector('.live-responses-table tbody .highlight-code pre')?.textContent",
        )
        problem = json.loads(shown)
        assert problem["type"] == "/problems/invalid" and "tch_missing" in problem["detail"]
        after = [e for e in browser.events if e.get("sessionId") == session]
        sent = [
            e["params"]["request"]
            for e in after
            if e["method"] == "Network.requestWillBeSent"
            and "/v1/jobs" in e["params"]["request"]["url"]
        ]
        assert sent and all(r["headers"].get("Authorization") == f"Bearer {DEV_KEY}" for r in sent)
        _assert_all_local(after, api_server)
    finally:
        _close(browser, session)


def test_openapi_documents_auth_and_problems(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <api key>`",
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert {"401", "503"} <= set(responses), (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert {"400", "422"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    content = response["content"]
                    assert list(content) == ["application/problem+json"], (method, path, status)
                    assert content["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }
