"""Pages for people: ``/jobs`` (the list) and ``/jobs/{job_id}`` (status, live progress, loss
and agreement curves, the report, downloads).

One static HTML shell and one script, served by the app (no CDN, works offline). The page
asks for the API key once (a password field; kept in the tab's sessionStorage) and calls the
JSON API with it, like any other client; it holds no data of its own. Charts are inline SVG
drawn by the script. The CSP allows nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static" / "pages"
STATIC_PATH = "/static/pages"
PAGES_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page(title: str) -> HTMLResponse:
    html = (STATIC_DIR / "page.html").read_text().replace("{{title}}", title)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": PAGES_CSP,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def install_pages(app: FastAPI) -> None:
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="pages-static")

    @app.get("/jobs", include_in_schema=False, response_class=HTMLResponse)
    async def jobs_page() -> HTMLResponse:
        return _page("Jobs")

    @app.get("/jobs/{job_id}", include_in_schema=False, response_class=HTMLResponse)
    async def job_page(job_id: str) -> HTMLResponse:
        return _page("Job")  # the script reads the id from the URL; nothing is echoed here
