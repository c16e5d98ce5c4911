"""The Python SDK: the REST API as typed calls (answers are ``stillhouse.models`` classes).

Requests that the server turns away for now (429, 503) are retried after ``Retry-After`` or
a backoff; so are refused connections, and broken ones for idempotent requests
(``RetryPolicy``). Lists come a page at a time (``page``) or as one iterator over every page
(``iterate``). ``stillhouse.AsyncClient`` is the same API for asyncio.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from stillhouse import _calls as api
from stillhouse._calls import Call, T
from stillhouse._core import (
    DEFAULT_TIMEOUT_S,
    ApiError,
    ProgressCallback,
    ProgressFile,
    RetryPolicy,
    SseParser,
    attachment_parts,
    checked_upload,
    download_name,
    student_params,
    upload_form,
)
from stillhouse.models import (
    ApiModel,
    Dataset,
    EpochMetrics,
    Job,
    JobEvent,
    Page,
    Report,
    StudentArchitecture,
    Teacher,
    UploadKind,
)

__all__ = ["ApiError", "Client", "RetryPolicy"]


class Client:
    """A connection to one Stillhouse API with one key. Use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

        self.teachers = Teachers(self)
        self.datasets = Datasets(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # the one way out: every call goes through the retry rule
    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = self.retry.delay_for_error(exc, request, attempt)
                if wait is None:
                    raise
            else:
                wait = self.retry.delay_for_response(resp, attempt)
                if wait is None:
                    return resp
                resp.close()
            time.sleep(wait)
            attempt += 1

    def _call(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        resp = self._send(self._http.build_request(method, path, **kwargs), stream=stream)
        if resp.status_code >= 400:
            resp.read()
            resp.close()
            raise ApiError.from_response(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    def _run(self, call: Call[T]) -> T:
        return call.read(self._call(call.method, call.path, **call.kwargs))

    # teachers and datasets
    def _upload(
        self,
        path: str,
        file: Path,
        name: str | None,
        extra: dict[str, str | None],
        progress: ProgressCallback | None,
        attachments: dict[str, Path] | None = None,
    ) -> Any:
        with open(file, "rb") as fh:
            body = ProgressFile(fh, os.fstat(fh.fileno()).st_size, progress)
            files = {"file": (file.name, body), **attachment_parts(attachments)}
            return self._json("POST", path, files=files, data=upload_form(name, extra))

    def upload_teacher(
        self,
        file: str | Path,
        name: str | None = None,
        *,
        output_name: str | None = None,
        output_kind: str | None = None,
        progress: ProgressCallback | None = None,
        tokenizer: str | Path | None = None,
    ) -> Teacher:
        """Upload a teacher (``.pt2``, ONNX, or a ZIP of a Hugging Face model folder; a text
        teacher's ``tokenizer.json`` beside it). It comes back ``validating``: see
        ``wait_ready``."""
        extra = {"output_name": output_name, "output_kind": output_kind}
        attachments = None if tokenizer is None else {"tokenizer": Path(tokenizer)}
        return Teacher.model_validate(
            self._upload("/v1/teachers", Path(file), name, extra, progress, attachments)
        )

    def upload_dataset(
        self, file: str | Path, name: str | None = None, *, progress: ProgressCallback | None = None
    ) -> Dataset:
        """Upload a transfer or eval set (npy, npz, csv, parquet, jsonl, zip of images)."""
        return Dataset.model_validate(self._upload("/v1/datasets", Path(file), name, {}, progress))

    def teacher(self, teacher_id: str) -> Teacher:
        return self._run(api.teacher(teacher_id))

    def dataset(self, dataset_id: str) -> Dataset:
        return self._run(api.dataset(dataset_id))

    def get(self, kind: str, object_id: str) -> ApiModel:
        """One teacher, dataset or job by collection name."""
        return self._run(api.get(kind, object_id))

    def delete(self, kind: str, object_id: str) -> None:
        self._run(api.delete(kind, object_id))

    def wait_ready(
        self, kind: UploadKind, object_id: str, timeout: float = 300.0, *, check: bool = True
    ) -> Teacher | Dataset:
        """Poll a teacher or dataset until it leaves ``validating``. ``check``: raise
        ``UploadRejected`` (the reason in its message) or ``TimeoutError`` unless it is ready;
        ``check=False`` returns it whatever its status."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.teacher(object_id) if kind == "teachers" else self.dataset(object_id)
            if obj.status != "validating" or time.monotonic() > deadline:
                return checked_upload(obj, object_id, timeout) if check else obj
            time.sleep(0.5)

    # lists
    def page(
        self, kind: str, *, limit: int = 50, cursor: str | None = None, **filters: Any
    ) -> Page[Any]:
        """One page of a collection (``teachers``, ``datasets``, ``jobs``), newest first."""
        return self._run(api.page(kind, limit, cursor, filters))

    def iterate(self, kind: str, *, page_size: int = 200, **filters: Any) -> Iterator[Any]:
        """Every item of a collection, newest first, fetching pages as it goes."""
        cursor: str | None = None
        while True:
            page = self.page(kind, limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def students(self) -> list[StudentArchitecture]:
        return self._run(api.students())

    # jobs
    def submit(self, spec: dict[str, Any] | BaseModel, idempotency_key: str | None = None) -> Job:
        """Submit a job (the body of ``POST /v1/jobs``: a dict or a pydantic spec)."""
        return self._run(api.submit(spec, idempotency_key))

    def job(self, job_id: str) -> Job:
        return self._run(api.job(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._run(api.cancel(job_id))

    def report(self, job_id: str) -> Report:
        return self._run(api.report(job_id))

    def metrics(self, job_id: str) -> list[EpochMetrics]:
        """One row per finished epoch (loss, agreement, learning rate, seconds)."""
        return self._run(api.metrics(job_id))

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> Job:
        """Poll a job until it ends (or ``timeout`` passes) and return it."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished or time.monotonic() > deadline:
                return job
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[JobEvent]:
        """A job's server-sent events until its final ``status`` event. A broken stream is
        reopened where it stopped (``Last-Event-ID``)."""
        parser = SseParser()
        parser.last_id = last_event_id
        attempt = 0
        while True:
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            try:
                yield from self._event_stream(job_id, headers, parser)
                return
            except (httpx.ReadError, httpx.RemoteProtocolError):
                attempt += 1
                if attempt >= self.retry.attempts:
                    raise
                time.sleep(self.retry.backoff(attempt))

    def _event_stream(
        self, job_id: str, headers: dict[str, str], parser: SseParser
    ) -> Iterator[JobEvent]:
        path = f"/v1/jobs/{job_id}/events"
        resp = self._call("GET", path, headers=headers, timeout=None, stream=True)
        with closing(resp):
            for line in resp.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return

    def download_student(
        self,
        job_id: str,
        fmt: str,
        dest: str | Path,
        *,
        progress: ProgressCallback | None = None,
        candidate: int | None = None,
    ) -> Path:
        """Save the student in ``fmt``; ``dest`` is a file, or a folder for the server's name.
        ``candidate``: a sweep's candidate by index (default: the chosen one)."""
        dest = Path(dest)
        params = student_params(fmt, candidate)
        resp = self._call("GET", f"/v1/jobs/{job_id}/student", params=params, stream=True)
        with closing(resp):
            if dest.is_dir():
                dest = dest / download_name(resp, f"student-{job_id}.{fmt}")
            total = int(resp.headers.get("content-length") or 0)
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
                    if progress is not None:
                        progress(resp.num_bytes_downloaded, total)
        return dest


class Teachers:
    """``client.teachers``: the teacher calls by their resource (``upload`` is
    ``upload_teacher``: a ``.pt2``, an ONNX file or a zipped Hugging Face model folder, with
    an optional ``tokenizer.json``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(
        self,
        file: str | Path,
        name: str | None = None,
        *,
        tokenizer: str | Path | None = None,
        output_name: str | None = None,
        output_kind: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Teacher:
        return self._client.upload_teacher(
            file,
            name,
            tokenizer=tokenizer,
            output_name=output_name,
            output_kind=output_kind,
            progress=progress,
        )

    def get(self, teacher_id: str) -> Teacher:
        return self._client.teacher(teacher_id)

    def wait_ready(self, teacher_id: str, timeout: float = 300.0, *, check: bool = True) -> Teacher:
        teacher = self._client.wait_ready("teachers", teacher_id, timeout, check=check)
        assert isinstance(teacher, Teacher)
        return teacher


class Datasets:
    """``client.datasets``: ``upload`` (``upload_dataset``), ``get``, ``wait_ready``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(
        self, file: str | Path, name: str | None = None, *, progress: ProgressCallback | None = None
    ) -> Dataset:
        return self._client.upload_dataset(file, name, progress=progress)

    def get(self, dataset_id: str) -> Dataset:
        return self._client.dataset(dataset_id)

    def wait_ready(self, dataset_id: str, timeout: float = 300.0, *, check: bool = True) -> Dataset:
        dataset = self._client.wait_ready("datasets", dataset_id, timeout, check=check)
        assert isinstance(dataset, Dataset)
        return dataset
