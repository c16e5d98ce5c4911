"""The SDK for asyncio: ``stillhouse.Client``'s calls as coroutines, with the same models,
retry rule and auto-pager (``iterate`` is an async iterator)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
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

__all__ = ["AsyncClient"]


class AsyncClient:
    """``async with AsyncClient(url, key) as client: job = await client.job(job_id)``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self.teachers = AsyncTeachers(self)
        self.datasets = AsyncDatasets(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = self.retry.delay_for_error(exc, request, attempt)
                if wait is None:
                    raise
            else:
                wait = self.retry.delay_for_response(resp, attempt)
                if wait is None:
                    return resp
                await resp.aclose()
            await asyncio.sleep(wait)
            attempt += 1

    async def _call(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        resp = await self._send(self._http.build_request(method, path, **kwargs), stream=stream)
        if resp.status_code >= 400:
            await resp.aread()
            await resp.aclose()
            raise ApiError.from_response(resp)
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._call(method, path, **kwargs)).json()

    async def _run(self, call: Call[T]) -> T:
        return call.read(await self._call(call.method, call.path, **call.kwargs))

    async def _upload(
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
            form = upload_form(name, extra)
            files = {"file": (file.name, body), **attachment_parts(attachments)}
            return await self._json("POST", path, files=files, data=form)

    async def upload_teacher(
        self,
        file: str | Path,
        name: str | None = None,
        *,
        output_name: str | None = None,
        output_kind: str | None = None,
        progress: ProgressCallback | None = None,
        tokenizer: str | Path | None = None,
    ) -> Teacher:
        extra = {"output_name": output_name, "output_kind": output_kind}
        attachments = None if tokenizer is None else {"tokenizer": Path(tokenizer)}
        body = await self._upload("/v1/teachers", Path(file), name, extra, progress, attachments)
        return Teacher.model_validate(body)

    async def upload_dataset(
        self, file: str | Path, name: str | None = None, *, progress: ProgressCallback | None = None
    ) -> Dataset:
        body = await self._upload("/v1/datasets", Path(file), name, {}, progress)
        return Dataset.model_validate(body)

    async def teacher(self, teacher_id: str) -> Teacher:
        return await self._run(api.teacher(teacher_id))

    async def dataset(self, dataset_id: str) -> Dataset:
        return await self._run(api.dataset(dataset_id))

    async def get(self, kind: str, object_id: str) -> ApiModel:
        return await self._run(api.get(kind, object_id))

    async def delete(self, kind: str, object_id: str) -> None:
        await self._run(api.delete(kind, object_id))

    async def wait_ready(
        self, kind: UploadKind, object_id: str, timeout: float = 300.0, *, check: bool = True
    ) -> Teacher | Dataset:
        """Poll a teacher or dataset until it leaves ``validating``. ``check``: raise
        ``UploadRejected`` (the reason in its message) or ``TimeoutError`` unless it is ready;
        ``check=False`` returns it whatever its status."""
        deadline = time.monotonic() + timeout
        while True:
            obj: Teacher | Dataset = (
                await self.teacher(object_id)
                if kind == "teachers"
                else await self.dataset(object_id)
            )
            if obj.status != "validating" or time.monotonic() > deadline:
                return checked_upload(obj, object_id, timeout) if check else obj
            await asyncio.sleep(0.5)

    async def page(
        self, kind: str, *, limit: int = 50, cursor: str | None = None, **filters: Any
    ) -> Page[Any]:
        return await self._run(api.page(kind, limit, cursor, filters))

    async def iterate(
        self, kind: str, *, page_size: int = 200, **filters: Any
    ) -> AsyncIterator[Any]:
        cursor: str | None = None
        while True:
            page = await self.page(kind, limit=page_size, cursor=cursor, **filters)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def students(self) -> list[StudentArchitecture]:
        return await self._run(api.students())

    async def submit(
        self, spec: dict[str, Any] | BaseModel, idempotency_key: str | None = None
    ) -> Job:
        return await self._run(api.submit(spec, idempotency_key))

    async def job(self, job_id: str) -> Job:
        return await self._run(api.job(job_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._run(api.cancel(job_id))

    async def report(self, job_id: str) -> Report:
        return await self._run(api.report(job_id))

    async def metrics(self, job_id: str) -> list[EpochMetrics]:
        return await self._run(api.metrics(job_id))

    async def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.finished or time.monotonic() > deadline:
                return job
            await asyncio.sleep(poll)

    async def events(
        self, job_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[JobEvent]:
        parser = SseParser()
        parser.last_id = last_event_id
        attempt = 0
        while True:
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            try:
                async for event in self._event_stream(job_id, headers, parser):
                    yield event
                return
            except (httpx.ReadError, httpx.RemoteProtocolError):
                attempt += 1
                if attempt >= self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.backoff(attempt))

    async def _event_stream(
        self, job_id: str, headers: dict[str, str], parser: SseParser
    ) -> AsyncIterator[JobEvent]:
        path = f"/v1/jobs/{job_id}/events"
        resp = await self._call("GET", path, headers=headers, timeout=None, stream=True)
        try:
            async for line in resp.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return
        finally:
            await resp.aclose()

    async def download_student(
        self,
        job_id: str,
        fmt: str,
        dest: str | Path,
        *,
        progress: ProgressCallback | None = None,
        candidate: int | None = None,
    ) -> Path:
        dest = Path(dest)
        path, params = f"/v1/jobs/{job_id}/student", student_params(fmt, candidate)
        resp = await self._call("GET", path, params=params, stream=True)
        try:
            if dest.is_dir():
                dest = dest / download_name(resp, f"student-{job_id}.{fmt}")
            total = int(resp.headers.get("content-length") or 0)
            with open(dest, "wb") as fh:
                async for chunk in resp.aiter_bytes():
                    fh.write(chunk)
                    if progress is not None:
                        progress(resp.num_bytes_downloaded, total)
        finally:
            await resp.aclose()
        return dest


class AsyncTeachers:
    """``client.teachers``: ``await client.teachers.upload(path, tokenizer=...)`` and the
    other teacher calls by their resource."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(
        self,
        file: str | Path,
        name: str | None = None,
        *,
        tokenizer: str | Path | None = None,
        output_name: str | None = None,
        output_kind: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Teacher:
        return await self._client.upload_teacher(
            file,
            name,
            tokenizer=tokenizer,
            output_name=output_name,
            output_kind=output_kind,
            progress=progress,
        )

    async def get(self, teacher_id: str) -> Teacher:
        return await self._client.teacher(teacher_id)

    async def wait_ready(
        self, teacher_id: str, timeout: float = 300.0, *, check: bool = True
    ) -> Teacher:
        teacher = await self._client.wait_ready("teachers", teacher_id, timeout, check=check)
        assert isinstance(teacher, Teacher)
        return teacher


class AsyncDatasets:
    """``client.datasets``: ``upload``, ``get``, ``wait_ready``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(
        self, file: str | Path, name: str | None = None, *, progress: ProgressCallback | None = None
    ) -> Dataset:
        return await self._client.upload_dataset(file, name, progress=progress)

    async def get(self, dataset_id: str) -> Dataset:
        return await self._client.dataset(dataset_id)

    async def wait_ready(
        self, dataset_id: str, timeout: float = 300.0, *, check: bool = True
    ) -> Dataset:
        dataset = await self._client.wait_ready("datasets", dataset_id, timeout, check=check)
        assert isinstance(dataset, Dataset)
        return dataset
