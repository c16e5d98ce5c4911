"""Drive the real service as a user would: ``stillhouse run`` in a subprocess (SQLite and the
filesystem broker under its own data folder, a free port, a bootstrap key), uploads, jobs
and downloads through the SDK, and the downloaded ONNX students run with onnxruntime.

No ``main``: a helper of the quality benchmarks, not a benchmark of its own.

With ``STILLHOUSE_BENCH_SERVICE_URL`` set (and ``STILLHOUSE_BENCH_SERVICE_KEY``, default the
bootstrap key below), ``Service`` starts nothing and drives the service already serving there:
the smoke tests start one for all the quality benchmarks (tests/bench/conftest.py).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._harness import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
KEY = "sh_bench_quality_key"
SERVICE_VARS = ("STILLHOUSE_DATABASE_URL", "STILLHOUSE_BROKER_URL", "STILLHOUSE_BROKER_KEY_PREFIX")
SHARED_URL = "STILLHOUSE_BENCH_SERVICE_URL"
SHARED_KEY = "STILLHOUSE_BENCH_SERVICE_KEY"


class Service:
    """``with Service(folder) as svc:`` serves on a free port; ``svc.client`` is the SDK.

    ``shared=True`` (or ``STILLHOUSE_BENCH_SERVICE_URL`` in the environment, with
    ``shared=None``) drives the service at that URL instead: nothing is started or stopped,
    ``svc.proc`` stays None and ``threads`` is the running service's business."""

    def __init__(
        self, folder: Path, *, threads: int | None = None, shared: bool | None = None
    ) -> None:
        self.folder = folder
        self.threads = threads
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.shared = bool(os.environ.get(SHARED_URL)) if shared is None else shared

    def __enter__(self) -> Service:
        from stillhouse.client import Client

        if self.shared:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.url = os.environ[SHARED_URL].rstrip("/")
            if not self._ready():
                raise RuntimeError(f"{SHARED_URL}: no ready service at {self.url}")
            self.client = Client(self.url, os.environ.get(SHARED_KEY, KEY), timeout=600)
            return self
        shutil.rmtree(self.folder / "var", ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        env.update(
            STILLHOUSE_DATA_DIR=str(self.folder / "var"),
            STILLHOUSE_PORT=str(port),
            STILLHOUSE_BOOTSTRAP_API_KEY=KEY,
            PYTHONPATH=str(ROOT),
        )
        if self.threads:
            env["STILLHOUSE_TORCH_THREADS"] = str(self.threads)
        self.log = open(self.folder / "service.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "run"],
            cwd=self.folder,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the service did not start; see {self.folder}/service.log")
            time.sleep(0.5)
        self.client = Client(self.url, KEY, timeout=600)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *_: object) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # a clean stop of the API and workers
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.shared:
            self.log.close()

    def upload(self, kind: str, path: Path, *, tokenizer: Path | None = None) -> str:
        """Upload a teacher (with its tokenizer.json, if given) or dataset, wait for
        validation, return its id."""
        if kind == "teachers":
            created = self.client.upload_teacher(path, name=path.name, tokenizer=tokenizer)
        else:
            created = self.client.upload_dataset(path, name=path.name)
        obj = self.client.wait_ready(kind, created["id"], timeout=900)
        if obj["status"] != "ready":
            raise RuntimeError(f"{path.name} was {obj['status']}: {obj.get('error')}")
        return str(obj["id"])

    def submit(self, spec: dict[str, Any]) -> str:
        spec = {"export_formats": ["onnx"], **spec}
        return str(self.client.submit(spec)["id"])

    def finish(self, job_id: str, dest: Path) -> tuple[dict[str, Any], Path]:
        """Wait for the job; return (its report, the downloaded ONNX student)."""
        job = self.client.wait(job_id, timeout=4 * 3600, poll=2.0)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        dest.mkdir(parents=True, exist_ok=True)
        path = self.client.download_student(job_id, "onnx", dest / f"{job_id}.onnx")
        assert job.report is not None
        return job.report.model_dump(mode="json"), path


def save_npz(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, dtype=np.int64)
    np.savez(path, **arrays)
    return path


def onnx_predict(path: Path, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Argmax classes of a downloaded ONNX student over ``x``, with onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [
        np.asarray(session.run(None, {name: x[i : i + batch].astype(np.float32)})[0]).argmax(1)
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def write_output(name: str, text: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.md"
    path.write_text(text + "\n")
    return path
