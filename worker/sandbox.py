"""Run teacher code in a child process: scrubbed environment, resource limits, private folder.

The child is ``python -m worker.distill.child``. It reads one ``ChildRequest`` on stdin and
writes ``ChildEvent`` JSON lines on stdout (``core/contracts.py``): progress and history any
number of times, then exactly one outcome or ``ErrorEvent``. It never sees the
database or broker credentials, and it dies with its parent (PR_SET_PDEATHSIG).

A child may be started before its request exists (``request=None``, ``preload=True``): it
imports torch and warms the export paths while it waits on stdin, and ``send`` hands it the
request later. The gpu worker keeps one such spare so that a job does not pay for the start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

import worker
from core.contracts import AnyEvent, ErrorEvent, ProgressEvent, parse_event
from core.errors import ErrorCode

KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
PR_SET_PDEATHSIG = 1
FINAL_EVENTS = frozenset({"result", "teacher", "dataset"})


class SandboxError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _project_root() -> str:
    return str(Path(worker.__file__).resolve().parent.parent)


def child_env(workdir: Path, threads: int) -> dict[str, str]:
    env = {name: os.environ[name] for name in KEEP_ENV if name in os.environ}
    env.update(
        HOME=str(workdir),
        TMPDIR=str(workdir),
        PYTHONPATH=_project_root(),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        STILLHOUSE_CHILD_THREADS=str(threads),
    )
    return env


def _limits(memory_bytes: int, cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


class Child:
    """A running sandboxed child. ``events()`` yields its JSON lines as they come."""

    def __init__(
        self,
        request: BaseModel | None,
        *,
        workdir: Path,
        threads: int,
        memory_bytes: int,
        cpu_seconds: int,
        preload: bool = False,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.threads, self.cpu_seconds = workdir, threads, cpu_seconds
        self.stderr_tail: deque[str] = deque(maxlen=40)
        env = child_env(workdir, threads)
        if preload:
            env["STILLHOUSE_CHILD_PRELOAD"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.distill.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            preexec_fn=_limits(memory_bytes, cpu_seconds),  # noqa: PLW1509 - needed for rlimits
            text=True,
        )
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        if request is not None:
            self.send(request)

    def send(self, request: BaseModel) -> None:
        """Hand the child its one request (it starts work when stdin closes)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(request.model_dump_json())
        self.proc.stdin.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def lines(self) -> Iterator[AnyEvent]:
        """The child's events; a line that is not one ends the stream as an ``ErrorEvent``."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.strip():
                continue
            event = parse_event(line)
            yield event
            if isinstance(event, ErrorEvent):
                return

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        """Kill (if running) and close the pipes. Call it once nothing reads ``lines()``."""
        self.kill()
        self._stderr_thread.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def crash_message(self) -> str:
        rc = self.proc.wait()
        tail = "\n".join(list(self.stderr_tail)[-8:])
        if rc < 0:
            reason = f"killed by signal {signal.Signals(-rc).name}"
            if -rc in (signal.SIGKILL, signal.SIGXCPU):
                reason += " (a resource limit, or the worker stopped it)"
        else:
            reason = f"exited with status {rc}"
        return f"the teacher process {reason}" + (f": {tail}" if tail else "")


def run_once(
    request: BaseModel,
    *,
    threads: int = 1,
    memory_bytes: int,
    cpu_seconds: int,
    timeout_s: float,
    on_progress: Callable[[ProgressEvent], None] | None = None,
) -> AnyEvent:
    """Run one request to completion and return its final event, or raise ``SandboxError``."""
    with tempfile.TemporaryDirectory(prefix="stillhouse-child-") as tmp:
        child = Child(
            request,
            workdir=Path(tmp),
            threads=threads,
            memory_bytes=memory_bytes,
            cpu_seconds=cpu_seconds,
        )
        timer = threading.Timer(timeout_s, child.kill)
        timer.start()
        try:
            for event in child.lines():
                if isinstance(event, ErrorEvent):
                    raise SandboxError(event.code, event.message)
                if isinstance(event, ProgressEvent):
                    if on_progress is not None:
                        on_progress(event)
                elif event.event in FINAL_EVENTS:
                    return event
            raise SandboxError(ErrorCode.TEACHER_CRASHED, child.crash_message())
        finally:
            timer.cancel()
            child.close()
