"""The SDK: typed answers, the auto-pager and the async client against the real API;
retries against small real HTTP servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stillhouse import ApiError, AsyncClient, Client, RetryPolicy, UploadRejected
from stillhouse.models import Dataset, Page, Teacher
from tests.cli.conftest import empty_tenant_data
from tests.conftest import DEV_KEY
from tests.factories import npz_bytes

FAST = RetryPolicy(attempts=4, backoff_s=0.01)
EMPTY_PAGE = b'{"items": [], "next_cursor": null}'


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers) of ``script``, then 200."""

    script: list[tuple[int, dict[str, str]]] = []
    seen: list[tuple[str, float]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.command, time.monotonic()))
        status, headers = type(self).script.pop(0) if type(self).script else (200, {})
        body = EMPTY_PAGE if status == 200 else b'{"title": "Busy", "detail": "later"}'
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_503_is_retried_after_retry_after(scripted: tuple[str, type[Scripted]]) -> None:
    url, handler = scripted
    handler.script = [(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})]
    with Client(url, "k", retry=FAST) as client:
        page = client.page("teachers")
    assert page.items == [] and page.next_cursor is None
    times = [t for _, t in handler.seen]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9  # waited as told


def test_429_gives_up_after_the_last_attempt(scripted: tuple[str, type[Scripted]]) -> None:
    url, handler = scripted
    handler.script = [(429, {})] * 10
    with Client(url, "k", retry=FAST) as client, pytest.raises(ApiError) as caught:
        client.submit({"teacher_ids": ["t"], "dataset_id": "d"})
    assert caught.value.status == 429 and caught.value.detail == "later"
    assert [method for method, _ in handler.seen] == ["POST"] * FAST.attempts


class HangUpOnce:
    """A server that closes the first connection without answering, then answers 200."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).decode("latin-1")
                self.requests.append(head.split(" ", 1)[0])
                if len(self.requests) > 1:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(EMPTY_PAGE), EMPTY_PAGE)
                    )


def test_a_broken_connection_is_retried_for_get_only() -> None:
    server = HangUpOnce()
    with Client(server.url, "k", retry=FAST) as client:
        assert client.page("jobs").items == []
    assert server.requests == ["GET", "GET"]

    server = HangUpOnce()
    with Client(server.url, "k", retry=FAST) as client, pytest.raises(httpx.TransportError):
        client.cancel("job_1")  # a POST may have been acted on: not sent twice
    assert server.requests == ["POST"]
    server.sock.close()


def test_a_refused_connection_is_retried_until_the_server_listens() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not yet listening: connections are refused
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    serving = threading.Event()

    def listen_later() -> None:
        time.sleep(0.3)
        sock.listen()
        serving.set()
        server.serve_forever()

    threading.Thread(target=listen_later, daemon=True).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with Client(url, "k", retry=RetryPolicy(attempts=10, backoff_s=0.2)) as client:
            assert client.page("datasets").items == []
        assert [method for method, _ in handler.seen] == ["GET"]
    finally:
        serving.wait(10)
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def three_datasets(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    import numpy as np

    path = tmp_path_factory.mktemp("sdk") / "x.npz"
    path.write_bytes(npz_bytes(np.zeros((4, 3), dtype=np.float32)))
    with Client(api_url, DEV_KEY) as client:
        ids = [client.upload_dataset(path, name=f"d{i}").id for i in range(3)]
    yield ids[::-1]  # newest first
    empty_tenant_data()


def test_answers_are_typed_models(api_url: str, three_datasets: list[str]) -> None:
    with Client(api_url, DEV_KEY) as client:
        dataset = client.dataset(three_datasets[0])
        page = client.page("datasets", limit=2)
    assert isinstance(dataset, Dataset) and dataset.name == "d2" and dataset.format == "npz"
    assert dataset["id"] == dataset.id  # mapping access, as the dict answers allowed
    assert isinstance(page, Page) and all(isinstance(d, Dataset) for d in page.items)


def test_iterate_walks_every_page(api_url: str, three_datasets: list[str]) -> None:
    with Client(api_url, DEV_KEY) as client:
        seen = [d.id for d in client.iterate("datasets", page_size=1)]
        assert seen == three_datasets
        assert list(client.iterate("teachers")) == []


def test_async_client_pages_uploads_and_raises_problems(
    api_url: str, three_datasets: list[str], tmp_path: Path
) -> None:
    from tests.factories import teacher_pt2_bytes

    (tmp_path / "t.pt2").write_bytes(teacher_pt2_bytes())

    async def scenario() -> tuple[list[str], Teacher, ApiError]:
        async with AsyncClient(api_url, DEV_KEY) as client:
            ids = [d.id async for d in client.iterate("datasets", page_size=2)]
            sent: list[int] = []
            teacher = await client.upload_teacher(
                tmp_path / "t.pt2", progress=lambda done, total: sent.append(done)
            )
            assert sent[-1] == (tmp_path / "t.pt2").stat().st_size
            # The calls both clients describe once (stillhouse/_calls.py), sent by this one.
            for same in (
                await client.get("teachers", teacher.id),
                await client.teacher(teacher.id),
            ):
                assert isinstance(same, Teacher) and same.id == teacher.id
            dataset = await client.dataset(ids[0])
            assert dataset.id == ids[0]
            assert {s.name for s in await client.students()} >= {"mlp", "cnn"}
            await client.delete("datasets", ids[-1])
            assert [d.id async for d in client.iterate("datasets")] == ids[:-1]
            with pytest.raises(ApiError) as caught:
                await client.job("job_nope")
            return ids, teacher, caught.value

    ids, teacher, error = asyncio.run(scenario())
    assert ids == three_datasets
    assert isinstance(teacher, Teacher) and teacher.status == "validating"
    assert (error.status, error.detail) == (404, "no job 'job_nope'")


def test_teachers_upload_sends_the_tokenizer_beside_the_file(api_url: str, tmp_path: Path) -> None:
    """``client.teachers.upload(path, tokenizer=...)``: the file and its tokenizer.json in
    one upload, read back through ``client.teachers.get`` (and the async twin)."""
    import numpy as np

    from tests.factories import teacher_pt2_bytes

    (tmp_path / "t.pt2").write_bytes(teacher_pt2_bytes())
    (tmp_path / "tokenizer.json").write_text('{"model": {}}')
    (tmp_path / "x.npz").write_bytes(npz_bytes(np.zeros((4, 3), dtype=np.float32)))
    with Client(api_url, DEV_KEY) as client:
        teacher = client.teachers.upload(tmp_path / "t.pt2", tokenizer=tmp_path / "tokenizer.json")
        assert client.teachers.get(teacher.id).id == teacher.id
        dataset = client.datasets.upload(tmp_path / "x.npz", name="some data")
    assert isinstance(teacher, Teacher) and teacher.status == "validating"
    assert dataset.name == "some data"

    async def scenario() -> Teacher:
        async with AsyncClient(api_url, DEV_KEY) as client:
            return await client.teachers.upload(
                tmp_path / "t.pt2", tokenizer=tmp_path / "tokenizer.json"
            )

    assert asyncio.run(scenario()).status == "validating"
    empty_tenant_data()


def test_wait_ready_raises_with_the_reason_for_a_rejected_upload(
    api_url: str, worker_process: object, tmp_path: Path
) -> None:
    """A rejected upload stops the script at ``wait_ready`` with validation's reason, not at
    the submit that follows with "is rejected, not ready"; ``check=False`` returns it."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, np.zeros((4, 3), dtype=np.float32))  # arr_0, not x
    (tmp_path / "bad.npz").write_bytes(buffer.getvalue())
    with Client(api_url, DEV_KEY) as client:
        upload = client.upload_dataset(tmp_path / "bad.npz")
        with pytest.raises(UploadRejected) as caught:
            client.wait_ready("datasets", upload.id, timeout=120)
        assert caught.value.upload.status == "rejected"
        assert f"{upload.id} was rejected: npz_members" in str(caught.value), caught.value
        assert "arr_0" in str(caught.value)
        same = client.datasets.wait_ready(upload.id, check=False)
        assert same.status == "rejected" and same.error is not None

    async def scenario() -> None:
        async with AsyncClient(api_url, DEV_KEY) as aclient:
            with pytest.raises(UploadRejected):
                await aclient.datasets.wait_ready(upload.id)

    asyncio.run(scenario())
    empty_tenant_data()  # the package's API keeps its key: not the `db` fixture's truncate
