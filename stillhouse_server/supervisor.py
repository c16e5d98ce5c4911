"""``stillhouse run``: migrate, make sure a key exists, then serve the API with its workers.

The embedded default needs no server: SQLite and kombu's filesystem transport under
``STILLHOUSE_DATA_DIR``. Workers that die are restarted (their jobs resume from checkpoints);
SIGINT or SIGTERM stops everything and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from core.settings import Settings

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STOP_GRACE_S = 15


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self, out: PrefixedOutput | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if out is None:
            self.popen = subprocess.Popen(self.argv, env=env)
        else:
            self.popen = subprocess.Popen(
                self.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            out.follow(self.name, self.popen)
        self.started_at = time.monotonic()


# The line each child logs last once it serves: uvicorn's, and Celery's "<hostname> ready.".
READY_MARKS = {"api": b"Uvicorn running on", "worker": b" ready."}


class PrefixedOutput:
    """Relays each child's output lines to our stdout, prefixed with the child's name
    (``api | ...``); a JSON log line instead gains a ``"service"`` field, so that it stays
    one JSON object a line. Once every child has said it is ready, ``when_ready`` is
    printed (once): the key and the exports end the start-up output instead of scrolling
    away under it."""

    def __init__(self, names: list[str], log_format: str, when_ready: str = "") -> None:
        self.width = max((len(n) for n in names), default=0)
        self.json = log_format == "json"
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._waiting = set(names) if when_ready else set()
        self._when_ready = when_ready

    def line(self, name: str, raw: bytes) -> bytes:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if self.json and text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if isinstance(record, dict):
                return (json.dumps({"service": name, **record}) + "\n").encode()
        return f"{name:<{self.width}} | {text}\n".encode()

    def follow(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        thread = threading.Thread(
            target=self._relay, args=(name, popen), daemon=True, name=f"out-{name}"
        )
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def drain(self, timeout: float = 2.0) -> None:
        """Wait a little for the last lines of children that have exited."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _relay(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        mark = READY_MARKS["api" if name == "api" else "worker"]
        for raw in popen.stdout:
            data = self.line(name, raw)
            with self._lock:
                sys.stdout.buffer.write(data)
                if self._waiting and mark in raw:
                    self._waiting.discard(name)
                    if not self._waiting:
                        sys.stdout.buffer.write(self._when_ready.encode() + b"\n")
                sys.stdout.buffer.flush()


def worker_threads(settings: Settings) -> int:
    return settings.torch_threads or max(1, os.cpu_count() or 1)


def processes(settings: Settings) -> list[Proc]:
    py = sys.executable
    data = settings.data_dir.resolve()
    # --quiet: no 30-line banner per worker (the key printed before would scroll away).
    celery = [py, "-m", "celery", "-A", "worker.celery_app", "--quiet"]
    api = Proc(
        "api",
        [
            py,
            "-m",
            "api.serve",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--log-level",
            "info",
        ],
    )
    validate = Proc(
        "worker-validate",
        [
            *celery,
            "worker",
            "-Q",
            "validate",
            "-c",
            "1",
            "-n",
            "validate@%h",
            "-l",
            "INFO",
            "-B",
            "-s",
            str(data / "celerybeat-schedule"),
        ],
    )
    gpu = Proc(
        "worker-gpu",
        [*celery, "worker", "-Q", "gpu", "-c", "1", "-n", "gpu@%h", "-l", "INFO"],
        env={"STILLHOUSE_TORCH_THREADS": str(worker_threads(settings))},
    )
    return [api, validate, gpu]


class Supervisor:
    def __init__(self, procs: list[Proc], log_format: str = "text", when_ready: str = "") -> None:
        self.procs = procs
        self.stopping = False
        self.out = PrefixedOutput([p.name for p in procs], log_format, when_ready)

    def _signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGTERM, self._signal)
        for proc in self.procs:
            proc.start(self.out)
        while not self.stopping:
            for proc in self.procs:
                self._check(proc)
            time.sleep(0.5)
        self.stop()
        self.out.drain()
        return 0

    def _check(self, proc: Proc) -> None:
        now = time.monotonic()
        if proc.popen is None:
            if now >= proc.next_start:
                print(f"stillhouse: restarting {proc.name}", file=sys.stderr, flush=True)
                proc.start(self.out)
            return
        rc = proc.popen.poll()
        if rc is None:
            if now - proc.started_at > 60:
                proc.restarts = 0
            return
        print(f"stillhouse: {proc.name} exited with {rc}", file=sys.stderr, flush=True)
        proc.popen = None
        delay = RESTART_BACKOFF_S[min(proc.restarts, len(RESTART_BACKOFF_S) - 1)]
        proc.restarts += 1
        proc.next_start = now + delay

    def stop(self) -> None:
        alive = [p.popen for p in self.procs if p.popen is not None and p.popen.poll() is None]
        for popen in alive:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for popen in alive:
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def port_taken(host: str, port: int) -> bool:
    """Whether another process listens on (host, port): binding it the way uvicorn does
    (SO_REUSEADDR) fails. Asked before anything starts, so that a second ``stillhouse run``
    says so instead of restarting its API forever."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def prepare(settings: Settings) -> str | None:
    """Create the data folder, migrate, and return a key to print (None if none is new)."""
    from core.db import session_scope
    from core.metrics import reset_multiprocess
    from migrations import upgrade
    from models.keys import create_key, ensure_bootstrap_key
    from models.repositories import TenantRepository

    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    (data / "files").mkdir(exist_ok=True)
    reset_multiprocess(settings)  # counters start again with the service
    upgrade()
    with session_scope() as session:
        if settings.bootstrap_api_key:
            ensure_bootstrap_key(session, settings.bootstrap_api_key)
            return settings.bootstrap_api_key
        if TenantRepository(session).by_name("default") is not None:
            return None
        key = create_key(session, tenant_name="default")
    dev_key = data / "dev-api-key"
    dev_key.write_text(key + "\n")
    dev_key.chmod(0o600)
    return key


def _backends(settings: Settings) -> str:
    """ "sqlite + filesystem broker", "postgresql + redis broker", ..."""
    database = (settings.database_url or "sqlite").split(":", 1)[0].split("+", 1)[0]
    broker = (settings.broker_url or "filesystem").split(":", 1)[0]
    return f"{database} + {broker} broker"


def banner(settings: Settings, key: str | None, ready: bool = False) -> str:
    """What `make run` prints first, and again once everything serves (``ready``): where
    it serves, and the two lines to paste into another terminal (with the key when it is
    known to this process)."""
    base = f"http://{settings.host}:{settings.port}"
    data = settings.data_dir.resolve()
    key_file = data / "dev-api-key"
    # The data folder too: `stillhouse keys create` writes to the server's database directly.
    folder = f" STILLHOUSE_DATA_DIR={data}"
    if key is not None:
        exports = f"export STILLHOUSE_URL={base} STILLHOUSE_API_KEY={key}{folder}"
        key_line = "API key (tenant default), shown once: " + key
    else:
        exports = f"export STILLHOUSE_URL={base} STILLHOUSE_API_KEY=$(cat {key_file}){folder}"
        key_line = (
            f"API key: the one made on the first start, kept in {key_file} "
            "(more: `stillhouse keys create --tenant NAME`)"
        )
    return "\n".join(
        [
            "",
            f"Stillhouse is {'ready' if ready else 'starting'} on {base}  "
            f"(docs: {base}/docs, jobs: {base}/jobs)",
            key_line,
            f"Data: {data}  ({_backends(settings)}; Ctrl-C stops everything)",
            "In another terminal (the repository's CLI is .venv/bin/stillhouse):",
            f"  {exports}",
            "",
        ]
    )
