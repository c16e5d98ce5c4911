"""What the sync and the async client share: errors, the retry rule, the event-stream
parser, upload progress. No I/O of its own."""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from stillhouse.models import KINDS, JobEvent, Page

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) while a file uploads."""

DEFAULT_TIMEOUT_S = 60.0

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 503})


class UploadRejected(Exception):
    """``wait_ready``: validation refused the upload; ``upload`` is the teacher or dataset
    (its ``error`` says why)."""

    def __init__(self, upload: Any) -> None:
        self.upload = upload
        super().__init__(f"{upload.id} was rejected: {rejection_reason(upload)}")


def rejection_reason(upload: Any) -> str:
    """``code: message`` of a rejected teacher or dataset."""
    error = getattr(upload, "error", None)
    return f"{error.code}: {error.message}" if error is not None else "no reason given"


def checked_upload(upload: Any, object_id: str, timeout: float) -> Any:
    """``wait_ready``'s end: the upload if ready; else UploadRejected or TimeoutError."""
    if upload.status == "rejected":
        raise UploadRejected(upload)
    if upload.status == "validating":
        raise TimeoutError(f"{object_id} is still validating after {timeout:g} s")
    return upload


class ApiError(Exception):
    """A problem+json answer: ``status``, ``title``, ``detail`` and the whole ``problem``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        self.type = str(problem.get("type", "about:blank"))
        super().__init__(f"{status} {self.title}: {self.detail}")

    @classmethod
    def from_response(cls, resp: httpx.Response) -> ApiError:
        """Needs the body read (``resp.read()`` first on a streamed response)."""
        try:
            problem = resp.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"title": resp.reason_phrase, "detail": resp.text[:500].strip()}
        return cls(resp.status_code, problem)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    429 and 503 mean the server did not act on the request, so any method is retried, after
    ``Retry-After`` when the answer gives one, else after an exponential backoff with jitter.
    A refused connection never reached the server: retried for any method too. A connection
    that broke mid-request may have been acted on: retried only for idempotent methods (and
    a POST carrying an ``Idempotency-Key``).
    """

    attempts: int = 5
    backoff_s: float = 0.5
    max_delay_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        base: float = min(self.max_delay_s, self.backoff_s * 2**attempt)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    def delay_for_response(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before the next try, or None when the answer is final."""
        if resp.status_code not in RETRY_STATUSES or attempt + 1 >= self.attempts:
            return None
        after = retry_after_seconds(resp.headers.get("retry-after"))
        return min(self.max_delay_s, after) if after is not None else self.backoff(attempt)

    def delay_for_error(
        self, exc: httpx.TransportError, request: httpx.Request, attempt: int
    ) -> float | None:
        if attempt + 1 >= self.attempts:
            return None
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return self.backoff(attempt)
        if request.method in IDEMPOTENT or "idempotency-key" in request.headers:
            return self.backoff(attempt)
        return None


NO_RETRY = RetryPolicy(attempts=1)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class SseParser:
    """Server-sent events, line by line (the subset the API sends: event, id, data)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self.last_id: str | None = None

    def feed(self, line: str) -> JobEvent | None:
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                prev = self._fields.get(name)
                self._fields[name] = value if prev is None or name != "data" else f"{prev}\n{value}"
            return None
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return None
        if "id" in fields:
            self.last_id = fields["id"]
        data = json.loads(fields["data"])
        return JobEvent(event=fields.get("event", "message"), id=fields.get("id"), data=data)


class ProgressFile:
    """A read-only file that reports how far an upload has read it."""

    def __init__(self, fh: IO[bytes], total: int, callback: ProgressCallback | None) -> None:
        self._fh, self.total, self._callback = fh, total, callback

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        if self._callback is not None:
            self._callback(self._fh.tell(), self.total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


def attachment_parts(attachments: dict[str, Path] | None) -> dict[str, tuple[str, bytes]]:
    """Small files sent beside the upload's file (a teacher's ``tokenizer``), read whole."""
    return {part: (path.name, path.read_bytes()) for part, path in (attachments or {}).items()}


def upload_form(name: str | None, extra: dict[str, str | None]) -> dict[str, str]:
    fields = {"name": name, **extra}
    return {k: v for k, v in fields.items() if v is not None}


def student_params(fmt: str, candidate: int | None) -> dict[str, str | int]:
    """The query of ``GET /v1/jobs/{id}/student``; no candidate: the server's default."""
    params: dict[str, str | int] = {"format": fmt}
    if candidate is not None:
        params["candidate"] = candidate
    return params


def download_name(resp: httpx.Response, fallback: str) -> str:
    """The file name from ``Content-Disposition``, reduced to a bare name (never a path)."""
    disposition = resp.headers.get("content-disposition", "")
    name = (
        disposition.split("filename=")[-1].strip().strip('"') if "filename=" in disposition else ""
    )
    return Path(name).name or fallback


def parse_page(kind: str, body: dict[str, Any]) -> Page[Any]:
    model = KINDS[kind]
    items = [model.model_validate(item) for item in body["items"]]
    return Page[Any](items=items, next_cursor=body.get("next_cursor"))
