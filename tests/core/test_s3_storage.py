"""S3Storage against a real S3-API server (moto's server mode on loopback)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from core.s3storage import PART_BYTES, LocalCache, S3Storage, parse_s3_url
from core.storage import OverLimit, new_key
from tests.s3server import make_bucket, s3_endpoint  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("s3_endpoint")


@pytest.fixture
def storage(s3_endpoint: str, tmp_path: Path) -> S3Storage:  # noqa: F811
    bucket = f"t-{secrets.token_hex(6)}"
    make_bucket(s3_endpoint, bucket)
    return S3Storage(
        f"s3://{bucket}/deploy/one",
        cache_dir=tmp_path / "cache",
        cache_max_bytes=3 * 1024 * 1024,
        endpoint_url=s3_endpoint,
    )


def _uploads_in_progress(storage: S3Storage) -> list[object]:
    listed = storage.client.list_multipart_uploads(Bucket=storage.bucket)
    return list(listed.get("Uploads", []))


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        parse_s3_url("/var/files")


def test_a_multipart_upload_hashes_streams_and_reads_back(storage: S3Storage) -> None:
    key = new_key("datasets")
    data = secrets.token_bytes(2 * PART_BYTES + 12345)  # three parts
    chunks = [data[i : i + 700_001] for i in range(0, len(data), 700_001)]
    put = storage.put_stream(key, iter(chunks))
    assert put.sha256 == hashlib.sha256(data).hexdigest()
    assert put.size_bytes == len(data) == storage.size(key)
    assert storage.exists(key)
    assert (
        b"".join(storage.read_range(key, PART_BYTES - 5, PART_BYTES + 5))
        == data[PART_BYTES - 5 : PART_BYTES + 6]
    )
    with storage.open(key) as fh:
        assert fh.read() == data
    name = storage.client.list_objects_v2(Bucket=storage.bucket)["Contents"][0]["Key"]
    assert name == f"deploy/one/{key}"
    assert _uploads_in_progress(storage) == []
    storage.delete(key)
    assert not storage.exists(key)


def test_too_large_aborts_the_multipart_upload(storage: S3Storage) -> None:
    key = new_key("teachers")
    chunks = iter([b"x" * PART_BYTES, b"x" * PART_BYTES, b"x"])
    with pytest.raises(OverLimit):
        storage.put_stream(key, chunks, max_bytes=2 * PART_BYTES)
    assert not storage.exists(key)
    assert _uploads_in_progress(storage) == []


def test_bad_keys_are_refused(storage: S3Storage) -> None:
    for key in ("", "/abs", "a/../b"):
        with pytest.raises(ValueError):
            storage.exists(key)


def test_local_path_downloads_once_by_sha256_and_verifies(storage: S3Storage) -> None:
    data = secrets.token_bytes(100_000)
    first = storage.put_stream(new_key("teachers"), iter([data]))
    second = storage.put_stream(new_key("teachers"), iter([data]))  # the same bytes again
    path = storage.local_path(first.key, first.sha256)
    assert path.read_bytes() == data
    assert storage.local_path(second.key, second.sha256) == path  # content-addressed
    storage.delete(first.key)
    assert storage.local_path(first.key, first.sha256).read_bytes() == data  # from the cache
    with pytest.raises(OSError, match="expected"):
        storage.local_path(second.key, "0" * 64)


def test_the_cache_evicts_least_recently_used_past_its_cap(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path, max_bytes=250)
    written = []

    def fetch(size: int):  # type: ignore[no-untyped-def]
        def write(dst: Path) -> str:
            body = secrets.token_bytes(size)
            dst.write_bytes(body)
            return hashlib.sha256(body).hexdigest()

        return write

    for i in range(3):
        written.append(cache.get(f"k{i}", None, fetch(100)))
    # 300 bytes > 250: the oldest (k0) went, k1 and k2 stay.
    assert [p.exists() for p in written] == [False, True, True]
    cache.get("k1", None, fetch(100))  # a hit refreshes k1
    written.append(cache.get("k3", None, fetch(100)))
    assert [p.exists() for p in written] == [False, True, False, True]


def test_delete_prefix_removes_every_object_under_it(storage: S3Storage) -> None:
    for name in ("a", "b", "c"):
        storage.put_stream(f"checkpoints/job_1/{name}", iter([b"x"]))
    storage.put_stream("checkpoints/job_10/keep", iter([b"x"]))
    assert storage.delete_prefix("checkpoints/job_1") == 3
    assert storage.exists("checkpoints/job_10/keep")
    assert not storage.exists("checkpoints/job_1/a")
