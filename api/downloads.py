"""Serve a stored file with ETag (its sha256), If-None-Match and single-range requests."""

from __future__ import annotations

import re

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from api.errors import RangeNotSatisfiable
from core.artifacts import Artifact
from core.storage import get_storage

RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# Past this many digits a position is beyond any file (and int() of a few thousand digits
# raises instead of parsing).
_MAX_DIGITS = 19
_BEYOND = 2**63


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range, inclusive. None means: serve the whole file (several ranges,
    or a unit we do not know, may be ignored per RFC 9110)."""
    match = RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = _position(last)
        if length == 0:
            raise RangeNotSatisfiable(
                "empty suffix range", headers={"Content-Range": f"bytes */{size}"}
            )
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(
            f"range starts past the end ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def file_response(request: Request, artifact: Artifact) -> Response:
    storage = get_storage()
    key, size = artifact.key, artifact.size_bytes
    etag = f'"{artifact.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{artifact.filename}"',
    }
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    span = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        span = _parse_range(range_header, size)
    if span is None:
        headers["Content-Length"] = str(size)
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return StreamingResponse(
            storage.read_range(key, 0, size - 1) if size else iter(()),
            media_type="application/octet-stream",
            headers=headers,
        )
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=206, headers=headers)
    return StreamingResponse(
        storage.read_range(key, start, end),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )
