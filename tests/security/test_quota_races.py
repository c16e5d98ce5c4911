"""Quotas hold under simultaneous requests, on SQLite (``make run``) and on Postgres.

The audit released 25 ``POST /v1/jobs`` together with ``STILLHOUSE_MAX_ACTIVE_JOBS=10``: 24
were accepted; 12 simultaneous uploads under a stored-bytes quota with room for 5 were all
stored. The tenant lock was a ``SELECT ... FOR UPDATE``, which SQLite ignores. Here the
requests go to a real API process, released together by a barrier, and exactly the allowed
number succeeds.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine

from core.db import make_engine
from migrations import upgrade
from tests.conftest import DEV_KEY, PG_URL
from tests.security.servers import ApiServer

MAX_ACTIVE_JOBS = 3
ROOM_FOR_UPLOADS = 5


def _npy(seed: int) -> bytes:
    out = io.BytesIO()
    np.save(out, np.full((16, 4), seed, dtype=np.float32))
    return out.getvalue()


UPLOAD_BYTES = len(_npy(0))


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """(database URL, the API's environment): SQLite with the filesystem broker (what
    ``make run`` serves), or this session's Postgres with Redis."""
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'stillhouse.db'}"
        upgrade(url)
        yield url, {"STILLHOUSE_DATA_DIR": str(data_dir), "STILLHOUSE_DATABASE_URL": "",
                    "STILLHOUSE_BROKER_URL": ""}  # fmt: skip
    else:
        request.getfixturevalue("db")  # migrated; emptied afterwards
        yield PG_URL, {"STILLHOUSE_DATA_DIR": str(data_dir)}


@pytest.fixture
def api(database: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[tuple[ApiServer, Engine]]:
    url, env = database
    quotas = {
        "STILLHOUSE_MAX_ACTIVE_JOBS": str(MAX_ACTIVE_JOBS),
        # What the bootstrap key's tenant holds (the seeded teacher and set) plus room for 5.
        "STILLHOUSE_MAX_STORED_BYTES": str(2 * UPLOAD_BYTES + ROOM_FOR_UPLOADS * UPLOAD_BYTES + 10),
    }
    server = ApiServer({**env, **quotas}, tmp_path / "api.log")
    engine = make_engine(url)
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


def _seed(engine: Engine) -> dict[str, str]:
    """A ready teacher and transfer set of the bootstrap tenant (no worker validates here)."""
    from sqlalchemy.orm import Session

    from models import Dataset, StoredFile, Teacher, new_id
    from models.repositories import TenantRepository

    with Session(engine) as session:
        tenant = TenantRepository(session).by_name("default")
        assert tenant is not None
        files = [
            StoredFile(id=new_id("file"), tenant_id=tenant.id, key=f"seed/{i}", kind=kind,
                       size_bytes=UPLOAD_BYTES, sha256="0" * 64)
            for i, kind in enumerate(("teacher", "dataset"))
        ]  # fmt: skip
        session.add_all(files)
        session.flush()
        common = {"tenant_id": tenant.id, "name": "seed", "filename": "seed", "size_bytes": 1,
                  "sha256": "0" * 64, "status": "ready"}  # fmt: skip
        teacher = Teacher(
            id=new_id("tch"), file_id=files[0].id, format="onnx", input_shape=[None, 4],
            input_dtype="float32", num_classes=3, **common,
        )  # fmt: skip
        dataset = Dataset(
            id=new_id("ds"), file_id=files[1].id, format="npy", sample_shape=[4],
            num_samples=16, dtype="float32", has_labels=False, **common,
        )  # fmt: skip
        session.add_all([teacher, dataset])
        session.commit()
        return {"teacher": teacher.id, "dataset": dataset.id}


def _together(
    url: str, count: int, request: Callable[[httpx.Client], httpx.Response]
) -> list[int | str]:
    """``count`` requests, each on its own connection, released at the same moment."""
    barrier = threading.Barrier(count)
    statuses: list[int | str] = []
    lock = threading.Lock()

    def one() -> None:
        status: int | str
        try:
            with httpx.Client(base_url=url, trust_env=False, timeout=60) as client:
                client.get("/healthz")  # connected before the barrier
                barrier.wait()
                status = request(client).status_code
        except Exception as exc:  # noqa: BLE001 - reported in the assertion
            status = repr(exc)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return sorted(statuses, key=str)


def test_simultaneous_submits_never_pass_the_active_jobs_quota(
    api: tuple[ApiServer, Engine],
) -> None:
    server, engine = api
    seeded = _seed(engine)
    body = {"teacher_ids": [seeded["teacher"]], "dataset_id": seeded["dataset"]}
    headers = {"Authorization": f"Bearer {DEV_KEY}"}

    def submit(client: httpx.Client) -> httpx.Response:
        return client.post("/v1/jobs", json=body, headers=headers)

    statuses = _together(server.url, 25, submit)
    assert statuses == [201] * MAX_ACTIVE_JOBS + [429] * (25 - MAX_ACTIVE_JOBS)


def test_simultaneous_uploads_never_pass_the_stored_bytes_quota(
    api: tuple[ApiServer, Engine],
) -> None:
    server, engine = api
    _seed(engine)
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    seeds = iter(range(100))

    def upload(client: httpx.Client) -> httpx.Response:
        files = {"file": ("x.npy", _npy(next(seeds)))}
        return client.post("/v1/datasets", files=files, headers=headers)

    statuses = _together(server.url, 12, upload)
    assert statuses == [201] * ROOM_FOR_UPLOADS + [413] * (12 - ROOM_FOR_UPLOADS)
