"""Pages for people: ``/`` points to the job pages and the docs; ``/problems`` lists every
error code and ``/problems/{code}`` explains one (the ``type`` URI of a problem+json body).

Plain HTML from the catalogue in ``core.errors``: no script, no asset from elsewhere.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.errors import PROBLEMS_PATH, NotFound, problem_type
from api.jsonbody import CheckedJsonRoute
from core.errors import CATALOGUE, ErrorCode, entry

router = APIRouter(include_in_schema=False, route_class=CheckedJsonRoute)

PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}code{background:#f3f3f3;padding:0 .25rem}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
    "padding:.3rem .5rem;text-align:left;vertical-align:top}"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} - Stillhouse</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": PAGE_CSP})


@router.get("/")
def home() -> HTMLResponse:
    return _page(
        "Stillhouse",
        "<h1>Stillhouse</h1><p>Knowledge distillation as a service: upload a teacher and a "
        "transfer set, get back a small student that agrees with it.</p><ul>"
        '<li><a href="/jobs">Jobs</a>: your jobs, their progress, curves and reports</li>'
        '<li><a href="/docs">API docs</a> (Swagger UI: authorize with your API key and try '
        'every route), or <a href="/redoc">ReDoc</a></li>'
        f'<li><a href="{PROBLEMS_PATH}">Error codes</a>: what each one means</li></ul>',
    )


def _kind(code: ErrorCode) -> str:
    status = entry(code).status
    return f"HTTP {status}" if status is not None else "job or upload error"


@router.get(PROBLEMS_PATH)
def list_problems() -> HTMLResponse:
    rows = "".join(
        f'<tr><td><a href="{problem_type(code)}"><code>{code}</code></a></td>'
        f"<td>{escape(item.title)}</td><td>{_kind(code)}</td></tr>"
        for code, item in CATALOGUE.items()
    )
    return _page(
        "Error codes",
        "<h1>Error codes</h1><p>A job's or an upload's <code>error.code</code>, and the last "
        "part of a problem's <code>type</code>.</p>"
        f"<table><tr><th>code</th><th>title</th><th>where</th></tr>{rows}</table>",
    )


@router.get(PROBLEMS_PATH + "/{code}")
def show_problem(code: str) -> HTMLResponse:
    try:
        known = ErrorCode(code.replace("-", "_"))  # "/problems/bad-request" names it too
    except ValueError:
        raise NotFound(f"no error code {code!r}; {PROBLEMS_PATH} lists them") from None
    item = entry(known)
    return _page(
        item.title,
        f"<h1>{escape(item.title)}</h1><p><code>{known}</code> &middot; {_kind(known)}</p>"
        f"<h2>What it means</h2><p>{escape(item.meaning)}</p>"
        f"<h2>What to do</h2><p>{escape(item.action)}</p>"
        f'<p><a href="{PROBLEMS_PATH}">All error codes</a> &middot; '
        '<a href="/docs">API docs</a></p>',
    )
