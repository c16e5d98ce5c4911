"""Domain errors carry their code (and so their HTTP status); one handler renders RFC 9457
problem+json for them and for everything else that can go wrong at the edge.

A problem's ``type`` is ``/problems/{code}``: the API serves a page there (api/routes/problems.py)
from the catalogue in ``core.errors``. Nothing leaves as ``text/plain``: the database being
away is a 503 with ``Retry-After``, a full disk a 507, anything unexpected a 500 problem.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ErrorCode, entry, is_disk_full
from models.pagination import BadCursor

PROBLEM = "application/problem+json"
PROBLEMS_PATH = "/problems"
# How long a client should wait before retrying while the database is away.
RETRY_AFTER_S = 5

log = logging.getLogger(__name__)


def problem_type(code: ErrorCode) -> str:
    return f"{PROBLEMS_PATH}/{code}"


class ProblemError(Exception):
    """Subclasses name their ``code``; status, title and type come from the catalogue."""

    code: ErrorCode = ErrorCode.BAD_REQUEST

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

    @property
    def status(self) -> int:
        status = entry(self.code).status
        assert status is not None, f"{self.code} is not an HTTP problem"
        return status

    @property
    def title(self) -> str:
        return entry(self.code).title

    @property
    def type(self) -> str:
        return problem_type(self.code)


class BadRequest(ProblemError):
    code = ErrorCode.BAD_REQUEST


class Unauthorized(ProblemError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ProblemError):
    code = ErrorCode.FORBIDDEN


class NotFound(ProblemError):
    code = ErrorCode.NOT_FOUND


class Conflict(ProblemError):
    code = ErrorCode.CONFLICT


class TooLarge(ProblemError):
    code = ErrorCode.TOO_LARGE


class UnsupportedFormat(ProblemError):
    code = ErrorCode.UNSUPPORTED_FORMAT


class Invalid(ProblemError):
    code = ErrorCode.INVALID


class TooManyRequests(ProblemError):
    code = ErrorCode.RATE_LIMITED


class RangeNotSatisfiable(ProblemError):
    code = ErrorCode.RANGE_NOT_SATISFIABLE


class ServiceUnavailable(ProblemError):
    code = ErrorCode.SERVICE_UNAVAILABLE


class StorageFull(ProblemError):
    code = ErrorCode.STORAGE_FULL


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def render(exc: ProblemError) -> JSONResponse:
    return problem_response(
        exc.status, exc.title, exc.detail, type_=exc.type, errors=exc.errors, headers=exc.headers
    )


def database_unavailable(
    detail: str = "the database does not answer; retry shortly",
) -> JSONResponse:
    return render(ServiceUnavailable(detail, headers={"Retry-After": str(RETRY_AFTER_S)}))


def _union_tag(part: object) -> bool:
    """pydantic's name for one member of a union in an error's location:
    ``str-enum[ExportFormat]``, ``literal['tokenizer']``, ``function-after[...]``."""
    return isinstance(part, str) and "[" in part


def _merged_unions(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per field for a value no member of a union accepted, not one per member
    named by its internal type (``query.format.str-enum[ExportFormat]: ...``)."""
    out: list[dict[str, Any]] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if not loc or not _union_tag(loc[-1]):
            out.append(err)
            continue
        msg = str(err.get("msg", ""))
        last = out[-1] if out else None
        if last is not None and last.get("union") and tuple(last["loc"]) == loc[:-1]:
            last["msgs"].append(msg)
        else:
            out.append({**err, "loc": loc[:-1], "union": True, "msgs": [msg]})
    for err in out:
        if err.pop("union", False):
            msgs = err.pop("msgs")
            prefix = "Input should be "
            if all(m.startswith(prefix) for m in msgs):
                err["msg"] = prefix + ", or ".join(m[len(prefix) :] for m in msgs)
            else:
                err["msg"] = "; or ".join(msgs)
    return out


def _field_errors(exc: RequestValidationError, content_type: str) -> list[dict[str, Any]]:
    out = []
    for err in _merged_unions(list(exc.errors())):
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        message = err.get("msg", "")
        if not loc and err.get("loc", ())[:1] == ("body",):
            # The body as a whole was refused: most often JSON sent without its Content-Type
            # (curl -d sends application/x-www-form-urlencoded), read as plain bytes.
            loc = ["body"]
            if not _is_json(content_type):
                got = content_type or "none"
                message = f"send a JSON body with Content-Type: application/json (got {got})"
        out.append({"field": ".".join(loc), "message": message, "type": err.get("type")})
    return out


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# Starlette's own HTTP errors (unknown route, wrong method, ...) under our codes.
_STATUS_CODES = {entry(code).status: code for code in ErrorCode if entry(code).status is not None}


def _is_disconnect(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


async def _problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return render(exc)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc, request.headers.get("content-type", ""))
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return render(Invalid(detail, errors=errors))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    code = _STATUS_CODES.get(exc.status_code)
    if code is None:
        title = _phrase(exc.status_code)
        return problem_response(exc.status_code, title, str(exc.detail), headers=headers)
    return problem_response(
        exc.status_code,
        entry(code).title,
        str(exc.detail),
        type_=problem_type(code),
        headers=headers,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _database(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if isinstance(exc, DataError):  # a value from the request the database refuses
        return render(
            BadRequest(
                "the request holds a value the database cannot take: "
                + (str(exc.orig).splitlines()[0] if exc.orig else "invalid value")
            )
        )
    if not _is_disconnect(exc):
        return await _unexpected(_, exc)
    log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return database_unavailable()


async def _bad_cursor(_: Request, exc: Exception) -> JSONResponse:
    """A list route's ``cursor`` that no page of it gave out."""
    return render(BadRequest(str(exc)))


async def _pool_timeout(_: Request, exc: Exception) -> JSONResponse:
    log.warning("no database connection free: %s", exc)
    return database_unavailable("no database connection is free; retry shortly")


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        log.error("storage full: %s", exc)
        return render(StorageFull("the server's storage is full; retry later"))
    return await _unexpected(request, exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    code = ErrorCode.INTERNAL
    return problem_response(
        500, entry(code).title, "an unexpected error occurred", type_=problem_type(code)
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
    app.add_exception_handler(BadCursor, _bad_cursor)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected)
