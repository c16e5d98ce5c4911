"""The streaming multipart parser on its own, fed the way a socket feeds it: in pieces."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.errors import StorageFull
from api.multipart import BLOCK, FormLimits, stream_upload
from core import storage
from core.storage import LocalStorage

BOUNDARY = "xyzzy"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def _pieces(payload: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    data = head + payload + f"\r\n--{BOUNDARY}--\r\n".encode()
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def _upload(root: Path, payload: bytes) -> Any:
    return asyncio.run(
        stream_upload(
            CONTENT_TYPE,
            _pieces(payload),
            storage=LocalStorage(root),
            key="k/x",
            limits=FormLimits(1 << 30, 16, 64 * 1024),
        )
    )


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _upload_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("upload")]


def test_many_blocks_arrive_whole_and_in_order(tmp_path: Path) -> None:
    payload = bytes(range(256)) * (11 * BLOCK // 256) + b"tail"
    parsed = _upload(tmp_path, payload)
    assert parsed.result.size_bytes == len(payload)
    assert parsed.result.sha256 == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "k" / "x").read_bytes() == payload
    assert not _upload_threads()


def test_a_failing_write_drops_the_queued_blocks_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = storage._Writer.write, {"n": 0}

    def flaky(self: Any, chunk: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(self, chunk)

    monkeypatch.setattr(storage._Writer, "write", flaky)
    with pytest.raises(StorageFull) as caught:  # answered 507, not 500
        _upload(tmp_path, b"x" * (20 * BLOCK))
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == 28
    assert 3 <= calls["n"] < 20  # the writes behind the failing one were not all made
    assert _files(tmp_path) == []
    assert not _upload_threads()
