"""A sweep's candidates through the SDK and the CLI: ``candidate=N`` reaches the query, and
without it the query is what it always was (the server's default: the chosen student)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stillhouse import AsyncClient, Client
from tests.cli.conftest import cli_env, stillhouse
from tests.conftest import DEV_KEY


def _measure(parameters: int) -> dict[str, Any]:
    return {
        "parameters": parameters,
        "size_bytes_fp32": 4 * parameters,
        "size_bytes_fp16": 2 * parameters,
        "latency_ms_batch1": 0.1,
        "throughput_per_s": 1000.0,
    }


def _candidate(index: int, size_ratio: float, parameters: int, agreement: float) -> dict[str, Any]:
    return {
        "index": index,
        "temperature": 4.0,
        "alpha": 0.1,
        "size_ratio": size_ratio,
        "parameters": parameters,
        "latency_ms_batch1": 0.1,
        "agreement_top1": agreement,
        "student_accuracy": 0.9,
        "kl_divergence": 0.1,
    }


REPORT: dict[str, Any] = {
    "teacher": _measure(10_000),
    "student": _measure(500),
    "compression_ratio": 20.0,
    "speedup": 3.0,
    "agreement_top1": 0.95,
    "kl_divergence": 0.1,
    "teacher_accuracy": 0.97,
    "student_accuracy": 0.9,
    "eval_samples": 100,
    "device": "cpu",
    "soft_labels": "cached",
    "timings_s": {},
    "candidates": [_candidate(0, 0.05, 500, 0.95), _candidate(1, 0.3, 3000, 0.952)],
    "chosen": 0,
    "baseline": {
        "parameters": 500,
        "latency_ms_batch1": 0.1,
        "agreement_top1": 0.90,
        "student_accuracy": 0.88,
        "kl_divergence": 0.3,
    },
    "distillation_gain": {"agreement_top1": 0.05, "student_accuracy": 0.02, "kl_divergence": -0.2},
}


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a few bytes and keeps each request's query."""

    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        url = urlsplit(self.path)
        type(self).queries.append(parse_qs(url.query))
        body = json.dumps(REPORT).encode() if url.path.endswith("/report") else b"student"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Disposition", 'attachment; filename="s.onnx"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"queries": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_sdk_asks_for_a_candidate_only_when_given_one(
    recorder: tuple[str, type[Recorder]], tmp_path: Path
) -> None:
    url, handler = recorder
    with Client(url, DEV_KEY) as client:
        client.download_student("job_1", "onnx", tmp_path / "a.onnx", candidate=2)
        client.download_student("job_1", "onnx", tmp_path / "b.onnx")

    async def both() -> None:
        async with AsyncClient(url, DEV_KEY) as client:
            await client.download_student("job_1", "onnx", tmp_path / "c.onnx", candidate=0)

    asyncio.run(both())
    assert handler.queries == [
        {"format": ["onnx"], "candidate": ["2"]},
        {"format": ["onnx"]},
        {"format": ["onnx"], "candidate": ["0"]},
    ]
    assert (tmp_path / "a.onnx").read_bytes() == b"student"


def test_the_cli_downloads_a_candidate(
    recorder: tuple[str, type[Recorder]], tmp_path: Path
) -> None:
    url, handler = recorder
    proc = stillhouse(
        "jobs", "download", "job_1", "--candidate", "1", "--out", str(tmp_path), env=cli_env(url)
    )
    assert proc.returncode == 0, proc.stderr
    assert handler.queries == [{"format": ["onnx"], "candidate": ["1"]}]
    assert (tmp_path / "s.onnx").read_bytes() == b"student"


def test_the_cli_report_lists_the_candidates_and_the_baseline(
    recorder: tuple[str, type[Recorder]],
) -> None:
    url, _ = recorder
    proc = stillhouse("jobs", "report", "job_1", "--output", "table", env=cli_env(url))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split()[:2] == ["0", "*"] and "95.00%" in line for line in lines), proc.stdout
    assert any(line.split()[:2] == ["1", "4"] and "3,000" in line for line in lines), proc.stdout
    assert "distillation bought +5.00 points agreement, +2.00 points accuracy" in proc.stdout
