"""Domain errors carry their HTTP status; one handler renders RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"


class ProblemError(Exception):
    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers


class BadRequest(ProblemError):
    status, title, type = 400, "Bad request", "/problems/bad-request"


class Unauthorized(ProblemError):
    status, title, type = 401, "Unauthorized", "/problems/unauthorized"


class Forbidden(ProblemError):
    status, title, type = 403, "Forbidden", "/problems/forbidden"


class NotFound(ProblemError):
    status, title, type = 404, "Not found", "/problems/not-found"


class Conflict(ProblemError):
    status, title, type = 409, "Conflict", "/problems/conflict"


class TooLarge(ProblemError):
    status, title, type = 413, "Payload too large", "/problems/too-large"


class UnsupportedFormat(ProblemError):
    status, title, type = 415, "Unsupported file format", "/problems/unsupported-format"


class Invalid(ProblemError):
    status, title, type = 422, "Invalid content or spec", "/problems/invalid"


class TooManyRequests(ProblemError):
    status, title, type = 429, "Too many requests", "/problems/too-many-requests"


class RangeNotSatisfiable(ProblemError):
    status, title, type = 416, "Range not satisfiable", "/problems/range"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            type_=exc.type,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(
            422, "Invalid content or spec", detail, type_=Invalid.type, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(
            exc.status_code, _title(exc.status_code), str(exc.detail), headers=headers
        )


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
