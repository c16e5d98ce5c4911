"""Stream a ``multipart/form-data`` body: the ``file`` part goes straight to storage.

Starlette's ``request.form()`` spools the file to a temporary file first (one more full copy
on disk); here each chunk is hashed and written once, and memory stays flat whatever the size.

The event loop only parses. The file's bytes are gathered into blocks of ``BLOCK`` bytes and
handed, in order, to one thread of the upload's own, which hashes and writes them (storage
hashes a block while writing it; both release the GIL) while the loop parses the next ones.
At most ``DEPTH`` blocks wait for that thread: past that the loop stops reading the socket,
so memory stays under ``(DEPTH + 1) * BLOCK`` whatever the size. The final fsync runs off
the loop too: a 2 GiB upload never stalls other requests. (bench/api_load.py measures it;
one block in flight instead of eight gave about 10 % less throughput.)

Everything but the file's bytes is held in memory until the form ends, so it is capped per
upload: the number of parts (``STILLHOUSE_MAX_FORM_PARTS``) and the bytes of every part's
headers and every field together (``STILLHOUSE_MAX_FORM_BYTES``); past either, 413. (An
upload with 100,000 fields of 4 kB beside the file was accepted and cost 400 MB.) A few
named small file parts (a teacher's ``tokenizer``) are held in memory too, each under its
own cap (``STILLHOUSE_MAX_FORM_TOKENIZER_BYTES``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from api.errors import BadRequest, StorageFull, TooLarge
from core import storage as st
from core.errors import is_disk_full

MAX_FIELD_BYTES = 4096
# A refused upload's rest is never read: the connection closes after the answer.
CLOSE = {"Connection": "close"}
BLOCK = 512 * 1024
DEPTH = 8


@dataclass(frozen=True)
class FormLimits:
    max_file_bytes: int
    max_parts: int
    max_form_bytes: int  # part headers and fields together: everything but the file
    # Small file parts kept in memory beside the file (a teacher's `tokenizer`), each capped.
    blob_names: tuple[str, ...] = ()
    max_blob_bytes: int = 0


@dataclass
class ParsedUpload:
    result: st.PutResult | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


class _State:
    def __init__(self, storage: st.Storage, key: str, limits: FormLimits) -> None:
        self.storage, self.key, self.limits = storage, key, limits
        self.max_bytes = limits.max_file_bytes
        self.out = ParsedUpload()
        self.parts = 0
        self.form_bytes = 0
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.writer: st.Writer | None = None
        self.file_size = 0
        self.file_ended = False
        self.pending: list[bytes] = []  # file bytes parsed but not yet handed to the writer
        self.pending_bytes = 0
        self.field_name: str | None = None
        self.field_value = bytearray()
        self.blob_name: str | None = None

    def count_form_bytes(self, size: int) -> None:
        self.form_bytes += size
        if self.form_bytes > self.limits.max_form_bytes:
            raise TooLarge(
                f"the form's fields and part headers are larger than the limit of "
                f"{self.limits.max_form_bytes} bytes (the file is not counted)",
                headers=CLOSE,
            )

    def header_data(self, attr: str, data: bytes, start: int, end: int) -> None:
        self.count_form_bytes(end - start)
        setattr(self, attr, getattr(self, attr) + data[start:end])

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise TooLarge(f"the form has more than {self.limits.max_parts} parts", headers=CLOSE)
        self.headers = {}
        self.field_name = self.blob_name = None
        self.field_value = bytearray()

    def header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.writer is not None:
                raise BadRequest("send exactly one 'file' part")
            raw = params.get(b"filename", b"upload")
            self.out.filename = _clean_filename(raw.decode("utf-8", "replace"))
            self.writer = self.storage.writer(self.key, self.max_bytes)
        elif name in self.limits.blob_names:
            if name in self.out.blobs:
                raise BadRequest(f"send at most one {name!r} part")
            self.blob_name = name
        elif b"filename" in params:  # a file under another name: not a field to count
            accepted = " or ".join(repr(n) for n in ("file", *self.limits.blob_names))
            raise BadRequest(
                f"the form has a file part named {name!r}: send the upload as a part named "
                f"'file' (curl -F file=@PATH), the only file parts accepted here being "
                f"{accepted}",
                headers=CLOSE,
            )
        else:
            self.field_name = name

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.writer is not None and not self.file_ended:
            self.file_size += len(chunk)
            if self.file_size > self.max_bytes:
                raise TooLarge(f"the file is larger than the limit of {self.max_bytes} bytes")
            self.pending.append(chunk)
            self.pending_bytes += len(chunk)
        elif self.blob_name is not None:
            self.field_value += chunk
            if len(self.field_value) > self.limits.max_blob_bytes:
                raise TooLarge(
                    f"the {self.blob_name!r} part is larger than the limit of "
                    f"{self.limits.max_blob_bytes} bytes",
                    headers=CLOSE,
                )
        elif self.field_name is not None:
            self.count_form_bytes(len(chunk))
            self.field_value += chunk
            if len(self.field_value) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {self.field_name!r} is too long")

    def part_end(self) -> None:
        if self.writer is not None and not self.file_ended:
            self.file_ended = True  # finished (fsync, rename) off the loop by stream_upload
        elif self.blob_name is not None:
            self.out.blobs[self.blob_name] = bytes(self.field_value)
        elif self.field_name is not None:
            self.out.fields[self.field_name] = self.field_value.decode("utf-8", "replace")

    def take_block(self) -> bytes:
        block = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        return block

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _clean_filename(name: str) -> str:
    """Metadata only, never a path: keep the last component and drop control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:255] or "upload"


async def stream_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    *,
    storage: st.Storage,
    key: str,
    limits: FormLimits,
) -> ParsedUpload:
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("send multipart/form-data with a 'file' part")
    state = _State(storage, key, limits)
    try:
        parser = _parser(params[b"boundary"], state)
    except FormParserError as exc:  # e.g. a boundary longer than RFC 2046's 70 characters
        raise BadRequest(f"malformed multipart boundary: {exc}") from exc
    return await _stream(parser, state, body, storage=storage, key=key)


def _parser(boundary: bytes, state: _State) -> MultipartParser:
    return MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": state.part_begin,
            "on_part_data": state.part_data,
            "on_part_end": state.part_end,
            "on_header_field": lambda d, s, e: state.header_data("header_field", d, s, e),
            "on_header_value": lambda d, s, e: state.header_data("header_value", d, s, e),
            "on_header_end": state.header_end,
            "on_headers_finished": state.headers_finished,
        },
    )


async def _stream(
    parser: MultipartParser,
    state: _State,
    body: AsyncIterator[bytes],
    *,
    storage: st.Storage,
    key: str,
) -> ParsedUpload:
    loop = asyncio.get_running_loop()
    # One thread per upload keeps the blocks in order; DEPTH blocks may wait for it.
    thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="upload")
    inflight: collections.deque[asyncio.Future[None]] = collections.deque()
    finishing = False

    async def hand_over(block: bytes) -> None:
        if len(inflight) >= DEPTH:
            await inflight.popleft()  # back-pressure: the socket waits, memory stays flat
        assert state.writer is not None
        inflight.append(loop.run_in_executor(thread, state.writer.write, block))

    try:
        try:
            async for chunk in body:
                parser.write(chunk)
                if state.pending_bytes >= BLOCK:
                    await hand_over(state.take_block())
            parser.finalize()
            if state.pending:
                await hand_over(state.take_block())
        finally:
            # Every queued write ends before the file may be closed or finished. If this task
            # is cancelled meanwhile, shutdown waits (at most DEPTH blocks) for the one running.
            try:
                done = await asyncio.gather(*inflight, return_exceptions=True)
            finally:
                thread.shutdown(wait=True, cancel_futures=True)
        failed = next((r for r in done if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        if state.writer is not None and not state.file_ended:  # the body ended inside the file
            raise BadRequest("the multipart body ended before the file did")
        if state.writer is None:
            raise BadRequest("the form has no 'file' part")
        finishing = True  # from here on the file may be in place under its key
        state.out.result = await run_in_threadpool(state.writer.finish, key)
        state.writer = None
    except FormParserError as exc:
        state.abort()
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    except st.OverLimit as exc:
        state.abort()
        raise TooLarge(f"the file is larger than the limit of {exc.limit} bytes") from exc
    except BaseException as exc:
        state.abort()
        if finishing:
            storage.delete(key)
        if is_disk_full(exc):
            raise StorageFull("the server's storage is full; the upload was not kept") from exc
        raise
    return state.out
