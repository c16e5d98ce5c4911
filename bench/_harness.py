"""Shared by bench/speed.py and bench/api_load.py: start the real service as subprocesses
on loopback, make a fresh Postgres database, read a process's memory. No ``main``: not a
benchmark of its own (bench/run_all.py runs modules that define ``main(argv)``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
KEY = "sh_bench_" + secrets.token_hex(8)
PG_ADMIN_URL = os.environ.get(
    "STILLHOUSE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STILLHOUSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# The service's own settings must not leak in from the caller's environment.
SERVICE_VARS = ("STILLHOUSE_DATABASE_URL", "STILLHOUSE_BROKER_URL", "STILLHOUSE_BROKER_KEY_PREFIX")


class Transcript:
    """``out(text)`` prints a line at once and keeps it; ``save`` writes them all out."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.lines) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    threads = torch.get_num_threads()
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, {threads} threads"


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def service_env(data_dir: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(
        STILLHOUSE_DATA_DIR=str(data_dir),
        STILLHOUSE_PORT=str(port),
        STILLHOUSE_BOOTSTRAP_API_KEY=KEY,
        STILLHOUSE_RATE_LIMIT_PER_SECOND="0",  # measure capacity, not the per-key limit
        PYTHONPATH=str(ROOT),
    )
    env.update(extra or {})
    return env


@contextlib.contextmanager
def processes(
    argvs: list[list[str]], env: dict[str, str], log: Path, ready_url: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start each argv in its own process group (logs appended to ``log``), wait until
    ``ready_url`` answers 200, and stop them all (SIGINT, then SIGKILL) on the way out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    with open(log, "ab") as sink:
        try:
            for argv in argvs:
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=ROOT,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            wait_for(lambda: http_ok(ready_url), timeout=180, interval=0.25)
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def embedded_service(
    data_dir: Path, port: int, extra: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[list[subprocess.Popen[bytes]]]:
    """``stillhouse run``: the API, a validate worker (with beat) and a gpu worker."""
    argv = [sys.executable, "-m", "stillhouse.cli", "run"]
    env = service_env(data_dir, port, extra)
    return processes([argv], env, data_dir / "service.log", f"http://127.0.0.1:{port}/readyz")


@contextlib.contextmanager
def fresh_postgres(
    admin_url: str = PG_ADMIN_URL, name: str | None = None, *, migrated: bool = False
) -> Iterator[str]:
    """A new database on the Postgres server of ``admin_url`` (empty, or migrated to head),
    dropped afterwards with whatever is still connected to it. Yields its URL."""
    from sqlalchemy import create_engine, text

    name = name or f"stillhouse_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        if migrated:
            from migrations import upgrade

            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def start_moto(log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port (any credentials are accepted). Returns the
    process and its endpoint once it accepts connections; the caller terminates it."""
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    with open(log or os.devnull, "ab") as out:
        command = [str(server), "-H", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = log.read_text()[-2000:] if log else ""
                raise RuntimeError(f"moto_server did not start: {tail}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """A real S3-API server (moto's server mode) on a free loopback port with a fresh bucket.
    Yields the service's environment for it (STILLHOUSE_STORAGE_URL and credentials)."""
    import boto3

    creds = {
        "AWS_ACCESS_KEY_ID": "stillhouse-bench",
        "AWS_SECRET_ACCESS_KEY": "stillhouse-bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    proc, endpoint = start_moto()
    try:
        bucket = f"bench-{secrets.token_hex(4)}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name=creds["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=bucket)
        yield {
            **creds,
            "STILLHOUSE_STORAGE_URL": f"s3://{bucket}/bench",
            "STILLHOUSE_S3_ENDPOINT_URL": endpoint,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def redis_env(url: str) -> dict[str, str]:
    return {
        "STILLHOUSE_DATABASE_URL": url,
        "STILLHOUSE_BROKER_URL": REDIS_URL,
        "STILLHOUSE_BROKER_KEY_PREFIX": f"stillhouse-bench-{secrets.token_hex(4)}:",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", "migrate"], cwd=ROOT, env=env, check=True
    )


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _stat(pid: int) -> list[str]:
    return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()


def settle(root: int, *, below: float = 0.05, timeout_s: float = 90.0) -> float:
    """Wait until ``root``'s process tree uses less than ``below`` of a core over a second
    (a service just started is still importing torch in its spare children); returns the
    seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = tree_cpu_seconds(root)
        time.sleep(1.0)
        if tree_cpu_seconds(root) - before < below:
            break
    return time.monotonic() - started


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and every descendant, the exited
    ones included (a reaped child's time is in its parent's cutime/cstime). Unlike wall
    time this barely moves with the other load on the machine."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    ticks = 0
    for pid in tree:
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(pid)
            ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
