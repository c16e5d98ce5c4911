"""The REST API's calls, described once: method, path, query or body, and how the answer
becomes a model. ``Client`` sends them with blocking I/O and ``AsyncClient`` with asyncio;
neither repeats a path or a parse. Uploads, downloads and the event stream move bytes as
they go, so each client keeps its own loop for those (over ``_core``'s shared pieces)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from stillhouse._core import parse_page
from stillhouse.models import (
    KINDS,
    ApiModel,
    Dataset,
    EpochMetrics,
    Job,
    Page,
    Report,
    StudentArchitecture,
    Teacher,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reading of its answer (called only on a 2xx answer)."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    kwargs: dict[str, Any] = field(default_factory=dict)


def _model(model: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda resp: model(resp.json())


def _nothing(resp: httpx.Response) -> None:
    return None


def spec_body(spec: dict[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        # What the caller set, as a JSON body would say it: a field left out keeps the
        # service's choice (training.epochs, left out, follows the transfer set's size).
        return spec.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    return dict(spec)


def teacher(teacher_id: str) -> Call[Teacher]:
    return Call("GET", f"/v1/teachers/{teacher_id}", _model(Teacher.model_validate))


def dataset(dataset_id: str) -> Call[Dataset]:
    return Call("GET", f"/v1/datasets/{dataset_id}", _model(Dataset.model_validate))


def get(kind: str, object_id: str) -> Call[ApiModel]:
    return Call("GET", f"/v1/{kind}/{object_id}", _model(KINDS[kind].model_validate))


def delete(kind: str, object_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/{kind}/{object_id}", _nothing)


def page(kind: str, limit: int, cursor: str | None, filters: dict[str, Any]) -> Call[Page[Any]]:
    params = {"limit": limit, "cursor": cursor, **filters}
    return Call(
        "GET",
        f"/v1/{kind}",
        _model(lambda body: parse_page(kind, body)),
        {"params": {k: v for k, v in params.items() if v}},
    )


def students() -> Call[list[StudentArchitecture]]:
    return Call(
        "GET",
        "/v1/students",
        _model(lambda body: [StudentArchitecture.model_validate(s) for s in body["items"]]),
    )


def submit(spec: dict[str, Any] | BaseModel, idempotency_key: str | None) -> Call[Job]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    kwargs = {"json": spec_body(spec), "headers": headers}
    return Call("POST", "/v1/jobs", _model(Job.model_validate), kwargs)


def job(job_id: str) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{job_id}", _model(Job.model_validate))


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", _model(Job.model_validate))


def report(job_id: str) -> Call[Report]:
    return Call("GET", f"/v1/jobs/{job_id}/report", _model(Report.model_validate))


def metrics(job_id: str) -> Call[list[EpochMetrics]]:
    return Call(
        "GET",
        f"/v1/jobs/{job_id}/metrics",
        _model(lambda body: [EpochMetrics.model_validate(row) for row in body["items"]]),
    )
