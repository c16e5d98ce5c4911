"""JSON bodies hold only what JSON can: no ``NaN`` or ``Infinity``, no lone UTF-16 surrogate.

Python's ``json`` accepts both: ``NaN`` and ``Infinity`` are an extension it reads as floats,
and ``"\\ud800"`` decodes to a string that cannot be encoded again. Either went on to fail
far from the request (a job failing later, a database driver's 500). Every route of the API
uses ``CheckedJsonRoute``: a JSON body is checked before FastAPI validates it, and each bad
value is a 422 naming its field, as pydantic's own errors do.
"""

from __future__ import annotations

import email.message
import math
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

Loc = tuple[str | int, ...]


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_value(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "JSON has no NaN or Infinity: send a finite number"
    if isinstance(value, str) and has_lone_surrogate(value):
        return "holds a lone UTF-16 surrogate (not a character): send valid Unicode"
    return None


def bad_values(value: Any) -> Iterator[tuple[Loc, str]]:
    """(where, why) of each non-finite number and each string or key with a lone surrogate.
    Iterative: a body nested as deep as the JSON parser allows must not overflow the stack."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key, v in reversed(list(item.items())):
                if has_lone_surrogate(key):
                    yield (*loc, _printable(key)), "the key holds a lone UTF-16 surrogate"
                else:
                    stack.append(((*loc, key), v))
        elif (why := _bad_value(item)) is not None:
            yield loc, why


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    if not content_type:
        return True  # FastAPI reads a body without a content type as JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def check_json_body(request: Request) -> None:
    if request.method in ("GET", "HEAD", "OPTIONS") or not _is_json(request):
        return
    if not await request.body():
        return
    try:
        parsed = await request.json()  # cached on the request: FastAPI reuses it
    except (ValueError, RecursionError):
        return  # malformed or too deep: FastAPI's own parse answers it
    errors = [
        {"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}
        for loc, msg in bad_values(parsed)
    ]
    if errors:
        raise RequestValidationError(errors)


class CheckedJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler  # no body parameter: FastAPI never reads it (uploads stream theirs)

        async def checked(request: Request) -> Response:
            await check_json_body(request)
            return await handler(request)

        return checked
