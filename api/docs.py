"""Self-hosted API docs: Swagger UI at /docs and ReDoc at /redoc, with no internet access.

FastAPI's built-in docs pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from
Google), so on a machine without internet they render blank. `install_docs` serves the same
pages with the JavaScript, CSS and favicon vendored under ``api/static/docs`` (versions and
licences in ``api/static/docs/VERSIONS.md``). The app must be created with
``FastAPI(docs_url=None, redoc_url=None)`` so that these routes replace the built-in ones.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static" / "docs"
STATIC_PATH = "/static/docs"
DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"

SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"

# Swagger UI's online validator badge would call validator.swagger.io: keep it off.
_SWAGGER_UI_PARAMETERS: dict[str, object] = {"validatorUrl": None}

# The docs pages may load and call only their own origin. This is what keeps them from
# reaching out even where the bundles hard-code a URL (ReDoc 2's side-menu logo is
# https://cdn.redoc.ly/redoc/logo-mini.svg): the browser blocks such requests before sending
# them. Inline script and styles stay allowed: FastAPI's Swagger UI page starts the UI with an
# inline script, and ReDoc injects its styles.
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)


def _root_path(request: Request) -> str:
    root_path: str = request.scope.get("root_path", "")
    return root_path.rstrip("/")


def _with_csp(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def install_docs(app: FastAPI) -> None:
    """Mount the vendored assets at /static/docs and add GET /docs, /docs/oauth2-redirect, /redoc.

    Every URL in the pages is same-origin (prefixed with the ASGI ``root_path`` when the app
    runs behind a proxy prefix). Does nothing when the app has no OpenAPI schema
    (``openapi_url=None``), as FastAPI's own docs do.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with FastAPI(docs_url=None, redoc_url=None)")
    openapi_url = app.openapi_url
    if openapi_url is None:
        return

    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="docs-static")

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _with_csp(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{STATIC_PATH}/{SWAGGER_JS}",
                swagger_css_url=f"{root}{STATIC_PATH}/{SWAGGER_CSS}",
                swagger_favicon_url=f"{root}{STATIC_PATH}/{FAVICON}",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters={
                    **_SWAGGER_UI_PARAMETERS,
                    **(app.swagger_ui_parameters or {}),
                },
            )
        )

    async def swagger_ui_redirect() -> HTMLResponse:
        return _with_csp(get_swagger_ui_oauth2_redirect_html())

    async def redoc_html(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _with_csp(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{STATIC_PATH}/{REDOC_JS}",
                redoc_favicon_url=f"{root}{STATIC_PATH}/{FAVICON}",
                with_google_fonts=False,
            )
        )

    app.add_api_route(DOCS_PATH, swagger_ui_html, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        OAUTH2_REDIRECT_PATH, swagger_ui_redirect, methods=["GET"], include_in_schema=False
    )
    app.add_api_route(REDOC_PATH, redoc_html, methods=["GET"], include_in_schema=False)
