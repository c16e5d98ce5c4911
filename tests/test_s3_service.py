"""The whole service on S3 storage (``STILLHOUSE_STORAGE_URL=s3://...``) against a real S3-API
server: uploads stream to the bucket, workers read through their local cache, the students
land in the bucket and download through the API byte for byte."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from stillhouse.client import Client
from tests.factories import digits, npz_bytes, teacher_pt2_bytes
from tests.s3server import S3_ENV, make_bucket, s3_endpoint  # noqa: F401 - the fixture
from tests.test_embedded import KEY, service_process


@pytest.mark.slow
def test_a_job_runs_with_every_object_in_s3(s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    import boto3

    bucket = f"svc-{secrets.token_hex(6)}"
    make_bucket(s3_endpoint, bucket)
    env = {
        **S3_ENV,
        "STILLHOUSE_STORAGE_URL": f"s3://{bucket}/stillhouse",
        "STILLHOUSE_S3_ENDPOINT_URL": s3_endpoint,
    }
    x, _, xe, ye = digits()
    (tmp_path / "t.pt2").write_bytes(teacher_pt2_bytes())
    (tmp_path / "x.npz").write_bytes(npz_bytes(x))
    (tmp_path / "e.npz").write_bytes(npz_bytes(xe, ye))
    with service_process(tmp_path, env) as (_, url), Client(url, KEY) as client:
        teacher = client.wait_ready("teachers", client.upload_teacher(tmp_path / "t.pt2")["id"])
        transfer = client.wait_ready("datasets", client.upload_dataset(tmp_path / "x.npz")["id"])
        evalset = client.wait_ready("datasets", client.upload_dataset(tmp_path / "e.npz")["id"])
        assert [teacher["status"], transfer["status"], evalset["status"]] == ["ready"] * 3
        job = client.submit(
            {
                "teacher_ids": [teacher["id"]],
                "dataset_id": transfer["id"],
                "eval_dataset_id": evalset["id"],
                "training": {"epochs": 3},
                "export_formats": ["onnx"],
            }
        )
        finished = client.wait(job["id"], timeout=300)
        assert finished["status"] == "succeeded", finished["error"]
        downloaded = client.download_student(job["id"], "onnx", tmp_path).read_bytes()

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    kinds = sorted({name.split("/")[1] for name in names})
    assert kinds == ["datasets", "softlabels", "students", "teachers"], names
    (student,) = [n for n in names if n.startswith("stillhouse/students/")]
    stored = s3.get_object(Bucket=bucket, Key=student)["Body"].read()
    assert stored == downloaded
    assert finished["report"]["student_files"]["onnx"] == hashlib.sha256(stored).hexdigest()
    # The data folder holds no uploaded or student file: only the hosts' caches.
    files = tmp_path / "var" / "files"
    left = [p for p in files.rglob("*") if p.is_file()] if files.exists() else []
    assert all("softlabels" in p.parts for p in left), left
    cached = [p for p in (tmp_path / "var" / "cache").rglob("*") if p.is_file()]
    assert len(cached) >= 3  # teacher, transfer set and eval set, by sha256
