"""Two worker "hosts" that share only Postgres, Redis and S3 (separate data folders): kill the
one training a job, and the other takes the job over from the checkpoint in the bucket."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._harness import free_port, fresh_postgres
from stillhouse.client import Client
from tests.conftest import BASE_PG_URL, DEV_KEY, ROOT, start_worker, stop_process, wait_for
from tests.factories import digits, npz_bytes, teacher_pt2_bytes
from tests.s3server import S3_ENV, make_bucket, s3_endpoint  # noqa: F401 - the fixture
from tests.test_embedded import _ready


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of its own: the session's sweep must not hand this job to its workers."""
    with fresh_postgres(
        BASE_PG_URL, f"stillhouse_hosts_{secrets.token_hex(4)}", migrated=True
    ) as url:
        yield url


def _api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "api.serve"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _objects(endpoint: str, bucket: str) -> list[str]:
    import boto3

    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_host_s_job_resumes_on_another_host_from_s3(
    own_database: str,
    s3_endpoint: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = f"hosts-{secrets.token_hex(4)}"
    make_bucket(s3_endpoint, bucket)
    shared = {
        **S3_ENV,
        "STILLHOUSE_DATABASE_URL": own_database,
        "STILLHOUSE_BROKER_KEY_PREFIX": f"stillhouse-hosts-{secrets.token_hex(4)}:",
        "STILLHOUSE_STORAGE_URL": f"s3://{bucket}/hosts",
        "STILLHOUSE_S3_ENDPOINT_URL": s3_endpoint,
    }

    def host(name: str) -> dict[str, str]:
        return {**shared, "STILLHOUSE_DATA_DIR": str(tmp_path / name)}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = [
        _api(host("api"), port, tmp_path / "api.log"),
        start_worker(
            "validate",
            "hosts-validate",
            "worker-hosts-validate.log",
            "-B",
            "-s",
            str(tmp_path / "beat"),
            env=host("host-v"),
        ),  # fmt: skip
    ]
    host_a = start_worker("gpu", "host-a", "worker-host-a.log", env=host("host-a"))
    procs.append(host_a)
    x, _, xe, ye = digits()
    (tmp_path / "t.pt2").write_bytes(teacher_pt2_bytes())
    (tmp_path / "x.npz").write_bytes(npz_bytes(x))
    (tmp_path / "e.npz").write_bytes(npz_bytes(xe, ye))
    try:
        wait_for(lambda: _ready(url), timeout=120, interval=0.5)
        with Client(url, DEV_KEY, timeout=60) as client:
            teacher = client.wait_ready("teachers", client.upload_teacher(tmp_path / "t.pt2").id)
            data = client.wait_ready("datasets", client.upload_dataset(tmp_path / "x.npz").id)
            held = client.wait_ready("datasets", client.upload_dataset(tmp_path / "e.npz").id)
            assert [teacher.status, data.status, held.status] == ["ready"] * 3
            job = client.submit(
                {
                    "teacher_ids": [teacher.id],
                    "dataset_id": data.id,
                    "eval_dataset_id": held.id,
                    "training": {"epochs": 40, "batch_size": 32, "seed": 7},
                }
            )
            pointer = f"hosts/checkpoints/{job.id}/checkpoint.json"

            def mid_training() -> bool:
                now = client.job(job.id)
                return (
                    now.stage == "training"
                    and (now.epoch or 0) >= 3
                    and pointer in _objects(s3_endpoint, bucket)
                )

            wait_for(mid_training, timeout=240, interval=0.3)
            os.kill(host_a.pid, signal.SIGKILL)
            host_a.wait()
            procs.append(start_worker("gpu", "host-b", "worker-host-b.log", env=host("host-b")))
            finished = client.wait(job.id, timeout=360)
            assert finished.status == "succeeded", finished.error
            assert finished.attempt == 2
            rows: list[dict[str, Any]] = httpx.get(
                f"{url}/v1/jobs/{job.id}/metrics",
                headers={"Authorization": f"Bearer {DEV_KEY}"},
            ).json()["items"]
    finally:
        for proc in procs:
            stop_process(proc)
    second = [r["epoch"] for r in rows if r["attempt"] == 2]
    assert second and min(second) > 1, rows  # host B went on from the checkpoint, not epoch 1
    assert not (tmp_path / "host-b" / "work" / job.id).exists()
    names = _objects(s3_endpoint, bucket)
    assert not [n for n in names if n.startswith(f"hosts/checkpoints/{job.id}/")], names
    # Host A's soft labels went to the bucket; host B fetched them instead of a teacher pass.
    assert [n for n in names if n.startswith("hosts/softlabels/")], names
    assert finished.report is not None and finished.report.timings_s["soft_labeling"] < 1.0
