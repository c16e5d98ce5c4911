"""S3-compatible object storage (AWS S3, MinIO, moto, ...), the same protocol as ``LocalStorage``.

``STILLHOUSE_STORAGE_URL=s3://bucket/prefix`` selects it; ``STILLHOUSE_S3_ENDPOINT_URL`` points
at a non-AWS server; credentials come from the standard ``AWS_*`` variables or files (boto3's
own chain). Writes are multipart uploads of ``PART_BYTES`` parts, hashed as they stream, so an
upload costs one part of memory whatever its size; a failed or aborted write aborts the
multipart upload and leaves nothing behind. Reads stream (ranges included).

``local_path`` is for the code that needs a file on this host (the sandboxed engine maps
datasets and loads teachers from disk): objects are downloaded once into a local cache,
content-addressed by sha256 when the caller knows it (a teacher uploaded by two tenants is
stored on the host once), verified on download, and evicted least-recently-used past
``cache_max_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from core.storage import CHUNK, OverLimit, PutResult

# S3's minimum part size is 5 MiB (all parts but the last); 8 MiB is boto3's own default.
PART_BYTES = 8 * 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return parts.netloc, parts.path.strip("/")


def _client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4")
    return boto3.client("s3", endpoint_url=endpoint_url or None, config=config)


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class _S3Writer:
    """One multipart upload: parts go out as they fill; ``finish`` completes it."""

    def __init__(self, client: Any, bucket: str, name: str, max_bytes: int | None) -> None:
        self.client, self.bucket, self.name = client, bucket, name
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise OverLimit(self.max_bytes)
        self.digest.update(chunk)
        self.buffer += chunk
        while len(self.buffer) >= PART_BYTES:
            self._send(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]

    def _send(self, body: bytes) -> None:
        if self.upload_id is None:
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.name)
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        sent = self.client.upload_part(
            Bucket=self.bucket, Key=self.name, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def finish(self, key: str) -> PutResult:
        if self.upload_id is None:  # small object: one PUT
            self.client.put_object(Bucket=self.bucket, Key=self.name, Body=bytes(self.buffer))
        else:
            if self.buffer:
                self._send(bytes(self.buffer))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.name,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.buffer.clear()
        return PutResult(key=key, size_bytes=self.size, sha256=self.digest.hexdigest())

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.name, UploadId=self.upload_id
            )
            self.upload_id = None


class S3Storage:
    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path,
        cache_max_bytes: int,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.client = client if client is not None else _client(endpoint_url)
        self.cache = LocalCache(cache_dir, cache_max_bytes)

    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str, max_bytes: int | None = None) -> _S3Writer:
        return _S3Writer(self.client, self.bucket, self._name(key), max_bytes)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None
    ) -> PutResult:
        writer = self.writer(key, max_bytes)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.finish(key)
        except BaseException:
            writer.abort()
            raise

    def put_file(self, key: str, source: Path) -> PutResult:
        with open(source, "rb") as fh:
            return self.put_stream(key, iter(lambda: fh.read(CHUNK), b""))

    def open(self, key: str) -> BinaryIO:
        got = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        return cast(BinaryIO, got["Body"])

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, streamed."""
        got = self.client.get_object(
            Bucket=self.bucket, Key=self._name(key), Range=f"bytes={start}-{end}"
        )
        body = got["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def size(self, key: str) -> int:
        head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix/``; the number deleted."""
        name = self._name(prefix.rstrip("/")) + "/"
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=name
        ):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                deleted += len(keys)
        return deleted

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        """A file on this host with the object's bytes, from the cache or downloaded now."""
        return self.cache.get(key, sha256, lambda dst: self._download(key, dst))

    def _download(self, key: str, destination: Path) -> str:
        digest = hashlib.sha256()
        got = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        with open(destination, "xb") as fh:
            for chunk in got["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        return digest.hexdigest()


class LocalCache:
    """Downloaded objects on this host: by sha256 when known, else by key; LRU past a cap.

    Use refreshes a file's mtime; eviction removes the oldest files first and never the one
    just fetched. A process that already opened an evicted file keeps reading it (POSIX).
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _path(self, key: str, sha256: str | None) -> Path:
        if sha256 is not None:
            return self.root / "sha256" / sha256[:2] / sha256
        token = hashlib.sha256(key.encode()).hexdigest()
        return self.root / "keys" / token[:2] / token

    def get(self, key: str, sha256: str | None, fetch: Any) -> Path:
        path = self._path(key, sha256)
        if path.is_file():
            os.utime(path)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            got = fetch(partial)
            if sha256 is not None and got != sha256:
                raise OSError(f"object {key}: sha256 {got}, expected {sha256}")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        self.evict(keep=path)
        return path

    def files(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.endswith(".part"):
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        return sorted(found)

    def evict(self, keep: Path) -> None:
        entries = self.files()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size
