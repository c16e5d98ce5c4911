"""The OpenAPI document as a working tool: a bearer security scheme on every /v1 route (so the
docs page has an Authorize button and "Try it out" sends the key), and every error a route
can answer documented as ``application/problem+json`` with one ``Problem`` schema.

Routes declare their own errors with ``responses=problems(...)``; what every route of a kind
can answer is added here, so that the document follows the routes as they change: 401, 429
and 503 under /v1, 403 for writes (a read-only key), 404 with a path id, 413 with a body, 400
and 422 wherever the request carries values.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from api.errors import PROBLEM, problem_type
from core.errors import ErrorCode, entry

SECURITY_SCHEME = "bearerAuth"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. training.epochs")
    message: str
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem. ``type`` is a page describing the error code (``/problems/...``)."""

    type: str = Field(examples=["/problems/invalid"])
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(default=None, description="Validation problems only")


def problem_response(code: ErrorCode) -> dict[str, Any]:
    item = entry(code)
    return {
        "description": f"{item.title}: {item.meaning} (see {problem_type(code)})",
        "content": {PROBLEM: {"schema": PROBLEM_REF}},
    }


def problems(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the problems it may answer besides the common ones."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = entry(code).status
        assert status is not None, f"{code} is not an HTTP problem"
        out[status] = problem_response(code)
    return out


def _common(path: str, method: str, operation: dict[str, Any]) -> list[ErrorCode]:
    codes = []
    if path.startswith("/v1/"):  # every /v1 route checks the key (and its rate) in the database
        codes += [ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED, ErrorCode.SERVICE_UNAVAILABLE]
        if method not in ("get", "head"):
            codes.append(ErrorCode.FORBIDDEN)  # a read-only key
    if "{" in path:
        codes.append(ErrorCode.NOT_FOUND)
    if method in ("post", "put", "patch"):
        codes.append(ErrorCode.TOO_LARGE)
    if operation.get("parameters") or operation.get("requestBody"):
        codes += [ErrorCode.BAD_REQUEST, ErrorCode.INVALID]
    return codes


def _document(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code in _common(path, method, operation):
        responses.setdefault(str(entry(code).status), problem_response(code))
    validation = responses.get("422")
    if validation is not None and PROBLEM not in validation.get("content", {}):
        responses["422"] = problem_response(ErrorCode.INVALID)  # not FastAPI's own shape
    if path.startswith("/v1/"):
        operation["security"] = [{SECURITY_SCHEME: []}]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _document(path, method, item[method])
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <api key>`",
    }
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
