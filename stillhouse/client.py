"""The Python SDK: a thin, typed wrapper over the REST API (API.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """A problem+json answer: ``status``, ``title``, ``detail`` and the whole ``problem``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}")


class Client:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            try:
                problem = resp.json()
            except ValueError:
                problem = {"title": resp.reason_phrase, "detail": resp.text[:500]}
            raise ApiError(resp.status_code, problem)
        return resp

    def _upload(
        self, path: str, file: Path, name: str | None, **fields: str | None
    ) -> dict[str, Any]:
        with open(file, "rb") as fh:
            data = {k: v for k, v in {"name": name, **fields}.items() if v}
            resp = self._call("POST", path, files={"file": (file.name, fh)}, data=data)
        return dict(resp.json())

    # teachers and datasets
    def upload_teacher(
        self,
        file: str | Path,
        name: str | None = None,
        *,
        output_name: str | None = None,
        output_kind: str | None = None,
    ) -> dict[str, Any]:
        """``output_name``: the output holding the class scores; ``output_kind``: "logits",
        "probabilities" or "log_probabilities". Unset, the validation dry run decides."""
        return self._upload(
            "/v1/teachers", Path(file), name, output_name=output_name, output_kind=output_kind
        )

    def upload_dataset(self, file: str | Path, name: str | None = None) -> dict[str, Any]:
        return self._upload("/v1/datasets", Path(file), name)

    def teacher(self, teacher_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/teachers/{teacher_id}").json())

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/datasets/{dataset_id}").json())

    def list(self, collection: str, **params: Any) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/{collection}", params=params).json())

    def delete(self, collection: str, object_id: str) -> None:
        self._call("DELETE", f"/v1/{collection}/{object_id}")

    def wait_ready(self, kind: str, object_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """Poll a teacher or dataset until it leaves ``validating``."""
        deadline = time.monotonic() + timeout
        while True:
            obj = dict(self._call("GET", f"/v1/{kind}/{object_id}").json())
            if obj["status"] != "validating" or time.monotonic() > deadline:
                return obj
            time.sleep(0.5)

    # jobs
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._call("POST", "/v1/jobs", json=spec, headers=headers).json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/cancel").json())

    def report(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}/report").json())

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL or time.monotonic() > deadline:
                return job
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Server-sent events of a job: dicts with ``event``, ``id`` and ``data``."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self._http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(resp.status_code, resp.json())
            event: dict[str, Any] = {}
            for line in resp.iter_lines():
                if not line:
                    if "data" in event:
                        event["data"] = json.loads(event["data"])
                        yield event
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    event[field] = value.lstrip()

    def download_student(self, job_id: str, fmt: str, dest: str | Path) -> Path:
        dest = Path(dest)
        with self._http.stream("GET", f"/v1/jobs/{job_id}/student", params={"format": fmt}) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(resp.status_code, resp.json())
            if dest.is_dir():
                disposition = resp.headers.get("content-disposition", "")
                name = disposition.split("filename=")[-1].strip('"') or f"student-{fmt}"
                dest = dest / Path(name).name
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        return dest
