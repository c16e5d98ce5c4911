"""Run user files' parsers and teacher code in a child process inside the sandbox.

The child is ``python -m engine.child``. It reads one ``ChildRequest`` on stdin and
writes ``ChildEvent`` JSON lines on stdout (``core/contracts.py``): progress and history any
number of times, then exactly one outcome or ``ErrorEvent``. Its walls (namespaces, the job
folder as its only writable place, an unprivileged user, rlimits) are ``worker/bwrap.py``'s;
its environment holds no database or broker URL and no key, and it dies with its parent.

Paths: a request names files as the worker sees them. ``send`` gives the child its own
names: uploads are hard-linked into the job folder's read-only ``inputs``, paths in the job
folder become paths under ``/job``, and the soft labels of the request's cache folder are
linked into ``/job/cache`` (new ones join that folder when the child is closed). The
outcome's files come back as the worker's paths.

A child may be started before its request exists (``request=None``, ``preload="job"``): it
imports torch and warms the export paths while it waits on stdin, and ``send`` hands it the
request later. The gpu worker keeps one such spare; ``adopt`` makes the job's folder the
spare's (the mount follows the renamed folder), so a spare serves any job. The validate
worker keeps two (``preload="teacher"`` and ``"dataset"``: the guarded loaders imported),
for the next uploads.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

import worker
from core.contracts import (
    AnyEvent,
    DistillRequest,
    ErrorEvent,
    FileRef,
    InspectDatasetRequest,
    InspectTeacherRequest,
    Outcome,
    ProgressEvent,
    SoftLabelsEvent,
    parse_event,
)
from core.enums import ExportFormat
from core.errors import ErrorCode
from core.settings import Settings, get_settings
from worker import bwrap
from worker.bwrap import (
    INPUTS,
    JOB_DIR,
    PR_SET_PDEATHSIG,
    SandboxError,
    link_or_copy,
    prepare_jobdir,
    stage_input,
)

if TYPE_CHECKING:
    from worker.spare import Spare

__all__ = ["PR_SET_PDEATHSIG", "Child", "SandboxError", "run_command", "run_once"]

KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
# The operator's caps on uploads: the child's loaders read them from these settings.
FINAL_EVENTS = frozenset({"result", "teacher", "dataset"})
EXIT_GRACE_S = 2.0  # for a child that wrote its last line to end on its own
# What a child started ahead of its request imports while it waits (engine/child.py).
Preload = Literal["job", "teacher", "dataset"]
READY = ".ready"  # the child writes it in its folder once it runs: its mounts are made
SOFT_LABELS = "soft-labels-*.safetensors"  # engine/soft_labels.py's file names
# engine/text_data.py's tokenized text: a folder per (dataset, tokenizer, max length),
# finished once it holds DONE_TOKENS.
TOKENS, DONE_TOKENS = "tokens-*", "done.json"
STOP_GRACE_S = 5.0
DISK_POLL_S = 1.0  # how often a sandbox's folder is measured against its disk cap


def _project_root() -> str:
    return str(Path(worker.__file__).resolve().parent.parent)


def child_env(home: Path, threads: int) -> dict[str, str]:
    """The child's whole environment: what Python and the libraries need, nothing of the
    worker's (its configuration comes in the request, ``core.contracts.EngineLimits``)."""
    env = {name: os.environ[name] for name in KEEP_ENV if name in os.environ}
    env.update(
        HOME=str(home),
        TMPDIR=str(home / "tmp"),
        PYTHONPATH=_project_root(),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        STILLHOUSE_CHILD_THREADS=str(threads),
    )
    return env


def job_threads(settings: Settings) -> int:
    return settings.torch_threads or (os.cpu_count() or 1)


class Child:
    """A running sandboxed child. ``lines()`` yields its events as they come.

    ``workdir`` is its folder (``/job`` inside): the job folder, or a spare's own.
    """

    def __init__(
        self,
        request: BaseModel | None,
        *,
        workdir: Path,
        threads: int,
        memory_bytes: int,
        cpu_seconds: int,
        preload: Preload | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.sandboxed = settings.sandbox != "none"
        self.workdir, self.threads, self.cpu_seconds = workdir, threads, cpu_seconds
        self.memory_bytes = memory_bytes
        self.finished = False
        self._cache: tuple[Path, Path] | None = None  # (the request's folder, ours)
        self._lease = bwrap.lease_uid(settings)
        self.uid = None if self._lease is None else self._lease.uid
        prepare_jobdir(workdir, self.uid)
        (workdir / READY).unlink(missing_ok=True)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        env = child_env(JOB_DIR if self.sandboxed else workdir, threads)
        if preload:
            env["STILLHOUSE_CHILD_PRELOAD"] = preload
        lim = bwrap.limits(settings, cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
        argv = [sys.executable, "-m", "engine.child"]
        with bwrap.sandboxed_argv(argv, workdir, settings, uid=self.uid) as (full, fds):
            self.proc = subprocess.Popen(
                full,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                preexec_fn=bwrap.preexec(lim),  # noqa: PLW1509 - needed for rlimits
                pass_fds=fds,
                text=True,
            )
        self.disk = DiskWatch(lambda: self.workdir, bwrap.disk_bytes(settings), self.stop)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        if request is not None:
            self.send(request)

    # --- paths: ours and the child's ---------------------------------------------------------

    def inside(self, path: Path) -> str:
        """The child's name for ``path``, a path in its folder."""
        if not self.sandboxed:
            return str(path)
        try:
            return str(JOB_DIR / Path(path).relative_to(self.workdir))
        except ValueError:
            raise SandboxError(
                ErrorCode.INTERNAL, f"{path} is outside the sandbox's folder {self.workdir}"
            ) from None

    def outside(self, path: str) -> Path:
        """Our name for the child's ``path``; only paths in its folder are accepted."""
        if not self.sandboxed:
            return Path(path)
        relative = Path(os.path.normpath(path)).relative_to(JOB_DIR)
        if ".." in relative.parts:
            raise SandboxError(ErrorCode.INTERNAL, f"the child named a path outside: {path}")
        return self.workdir / relative

    def _stage(self, name: str, path: str) -> str:
        """Link the upload ``path`` into the read-only inputs; the child's name for it."""
        return self.inside(stage_input(self.workdir, f"{name}{Path(path).suffix}", Path(path)))

    def _staged(self, name: str, ref: FileRef) -> FileRef:
        return ref.model_copy(update={"path": self._stage(name, ref.path)})

    def _link_cache(self, scope: Path) -> str:
        """Our copy of the soft-label folder ``scope``: links to its labels."""
        cache = self.workdir / "cache"
        cache.mkdir(exist_ok=True)
        if self.uid is not None:
            os.chown(cache, self.uid, self.uid)
        for path in scope.glob(SOFT_LABELS):
            with contextlib.suppress(OSError):  # gone meanwhile: computed again
                link_or_copy(path, cache / path.name)
                self.disk.not_written(cache / path.name)
        for folder in scope.glob(TOKENS):
            if not (folder / DONE_TOKENS).is_file():
                continue
            with contextlib.suppress(OSError):  # gone meanwhile: tokenized again
                ours = cache / folder.name
                ours.mkdir(exist_ok=True)
                for path in folder.iterdir():
                    link_or_copy(path, ours / path.name)
                    self.disk.not_written(ours / path.name)
        self._cache = (scope, cache)
        return self.inside(cache)

    def _keep_cache(self) -> None:
        """Labels the child computed join the request's cache folder: at its outcome (the
        job folder goes once it is published), else when it is closed."""
        if self._cache is None:
            return
        scope, cache = self._cache  # kept: a later call adds what came since
        for path in cache.glob(SOFT_LABELS):
            target = scope / path.name
            if path.is_file() and not path.is_symlink() and not target.exists():
                scope.mkdir(parents=True, exist_ok=True)
                tmp = scope / f".{path.name}.{secrets.token_hex(4)}.tmp"
                link_or_copy(path, tmp)
                if self.uid is not None:  # no later sandbox may change it
                    os.chown(tmp, 0, 0)
                    os.chmod(tmp, 0o644)
                os.replace(tmp, target)
        for folder in cache.glob(TOKENS):
            if folder.is_symlink() or not (folder / DONE_TOKENS).is_file():
                continue  # unfinished (or not a folder): never shared
            if not (scope / folder.name).exists():
                self._keep_tokens(folder, scope)

    def _keep_tokens(self, folder: Path, scope: Path) -> None:
        """A finished folder of token arrays joins the cache folder whole: its plain files
        linked into a temporary folder, made root's, then renamed into place."""
        scope.mkdir(parents=True, exist_ok=True)
        tmp = scope / f".{folder.name}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
        try:
            for path in folder.iterdir():
                if path.is_symlink() or not path.is_file():
                    continue
                link_or_copy(path, tmp / path.name)
                if self.uid is not None:
                    os.chown(tmp / path.name, 0, 0)
                    os.chmod(tmp / path.name, 0o644)
            os.rename(tmp, scope / folder.name)
        except OSError:  # another job kept the same folder first
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def translate(self, request: BaseModel) -> BaseModel:
        """``request`` with the child's names for its paths (see the module's docstring)."""
        if not self.sandboxed:
            return request
        if isinstance(request, InspectTeacherRequest) and request.tokenizer_path is not None:
            staged = {
                "path": self._stage("upload", request.path),
                "tokenizer_path": self._stage("tokenizer", request.tokenizer_path),
            }
            return request.model_copy(update=staged)
        if isinstance(request, InspectTeacherRequest | InspectDatasetRequest):
            return request.model_copy(update={"path": self._stage("upload", request.path)})
        if not isinstance(request, DistillRequest):
            raise SandboxError(ErrorCode.INTERNAL, f"no paths known in {type(request).__name__}")
        teachers = [self._staged(f"teacher-{i}", t) for i, t in enumerate(request.teachers)]
        update = {
            "teachers": teachers,
            "transfer": self._staged("transfer", request.transfer),
            "eval": None if request.eval is None else self._staged("eval", request.eval),
            "tokenizer": (
                None if request.tokenizer is None else self._staged("tokenizer", request.tokenizer)
            ),
            "workdir": self.inside(Path(request.workdir)),
            "stop_file": self.inside(Path(request.stop_file)),
            "cache_dir": self._link_cache(Path(request.cache_dir)),
        }
        bwrap.hand_over(self.workdir, self.uid)
        return request.model_copy(update=update)

    def adopt(self, jobdir: Path) -> None:
        """Make ``jobdir`` this child's folder: its content (checkpoints of an earlier
        attempt) moves into ours, then ours takes its name. Renaming keeps the mount."""
        if not self.sandboxed or jobdir == self.workdir:
            return
        self._await_ready()  # bwrap has made its mounts: a rename can no longer confuse it
        if jobdir.exists():
            for entry in jobdir.iterdir():
                if entry.name not in (INPUTS, "tmp", READY):
                    shutil.rmtree(self.workdir / entry.name, ignore_errors=True)
                    entry.rename(self.workdir / entry.name)
            shutil.rmtree(jobdir)
        jobdir.parent.mkdir(parents=True, exist_ok=True)
        self.workdir.rename(jobdir)
        self.workdir = jobdir

    def _await_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the child runs; BrokenPipeError if it ended instead."""
        deadline = time.monotonic() + timeout_s
        while not (self.workdir / READY).exists():
            if not self.alive() or time.monotonic() > deadline:
                raise BrokenPipeError("the child ended before it was ready")
            time.sleep(0.02)

    # --- the process ---------------------------------------------------------------------------

    def send(self, request: BaseModel) -> None:
        """Hand the child its one request (it starts work when stdin closes)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.translate(request).model_dump_json())
        self.proc.stdin.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        # ``close`` may close the pipe under us (after a bounded join): the read ends there.
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self.stderr_tail.append(line.rstrip())

    def lines(self) -> Iterator[AnyEvent]:
        """The child's events; a line that is not one ends the stream as an ``ErrorEvent``."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.strip():
                continue
            event = parse_event(line)
            if isinstance(event, Outcome) and self.sandboxed:
                event = event.model_copy(
                    update={
                        "files": self._outside_files(event.files),
                        "candidates": [self._outside_files(c) for c in event.candidates],
                    }
                )
                self._keep_cache()
            elif isinstance(event, SoftLabelsEvent) and self.sandboxed:
                self._keep_cache()  # finished labels: the worker copies them to the store
            if isinstance(event, ErrorEvent) or event.event in FINAL_EVENTS:
                self.finished = True
            yield event
            if isinstance(event, ErrorEvent):
                return

    def _outside_files(self, files: dict[ExportFormat, Path]) -> dict[ExportFormat, Path]:
        return {fmt: self.outside(str(path)) for fmt, path in files.items()}

    def kill(self) -> None:
        """Stop the child. One that wrote its last line gets EXIT_GRACE_S to end on its own:
        then bwrap reaps it, and its CPU time counts in ours (a killed bwrap's would not)."""
        if self.finished:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=EXIT_GRACE_S)
        self.stop()
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc)

    def close(self) -> None:
        """Kill (if running) and close the pipes. Call it once nothing reads ``lines()``."""
        self.kill()
        self.disk.stop()
        if self._lease is not None:
            self._lease.release()
        self._stderr_thread.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._keep_cache()

    def crash_message(self) -> str:
        rc = self.proc.wait()
        if self.disk.exceeded:
            return f"the teacher process {self.disk.exceeded_message()}"
        return crash_message(rc, list(self.stderr_tail)[-8:])


def stop(proc: subprocess.Popen[Any]) -> None:
    """Kill a sandbox: SIGTERM to its leader (a root worker's reaper kills all below it,
    bwrap takes its command along), then SIGKILL to the group after STOP_GRACE_S."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def crash_message(rc: int, tail: list[str]) -> str:
    # bwrap reports a command killed by signal N as the exit status 128 + N.
    signum = -rc if rc < 0 else rc - 128 if 128 < rc < 160 else 0
    if signum:
        reason = f"killed by signal {signal.Signals(signum).name}"
        if signum in (signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ):
            reason += " (a resource limit, or the worker stopped it)"
    else:
        reason = f"exited with status {rc}"
    text = "\n".join(tail)
    return f"the teacher process {reason}" + (f": {text}" if text else "")


def _scratch(settings: Settings, kind: str) -> Path:
    return settings.data_dir.resolve() / "work" / f".{kind}-{secrets.token_hex(8)}"


def run_once(
    request: BaseModel,
    *,
    threads: int = 1,
    memory_bytes: int,
    cpu_seconds: int,
    timeout_s: float,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    settings: Settings | None = None,
    spare: Spare | None = None,
) -> AnyEvent:
    """Run one request to completion in a fresh folder and return its final event, or raise
    ``SandboxError``. ``spare``: a holder of a child started ahead with the same limits,
    taken when it is alive, else a cold start; another is started for the next request."""
    settings = settings or get_settings()
    workdir = _scratch(settings, "once")
    child: Child | None = None
    try:
        if spare is not None:
            child = spare.take(settings, request, workdir)
        cold = child is None
        if child is None:
            child = Child(
                None,
                workdir=workdir,
                threads=threads,
                memory_bytes=memory_bytes,
                cpu_seconds=cpu_seconds,
                settings=settings,
            )
        try:
            return _finish(child, request if cold else None, timeout_s, on_progress)
        finally:
            child.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if child is not None:  # unsandboxed, a spare keeps its own folder
            shutil.rmtree(child.workdir, ignore_errors=True)
        if spare is not None:
            spare.start(settings)  # for the next request


def _finish(
    child: Child,
    request: BaseModel | None,
    timeout_s: float,
    on_progress: Callable[[ProgressEvent], None] | None,
) -> AnyEvent:
    """The child's final event; ``request`` is sent first unless it has been (None)."""
    try:
        if request is not None:
            child.send(request)
    except BrokenPipeError:
        raise SandboxError(ErrorCode.TEACHER_CRASHED, child.crash_message()) from None
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


def run_command(argv: list[str], *, settings: Settings, memory_bytes: int) -> int:
    """Run ``argv`` in a fresh folder's sandbox, stdio inherited; its exit status. The same
    user, namespaces, limits and environment as a job's engine child."""
    workdir = _scratch(settings, "exec")
    lease = bwrap.lease_uid(settings)
    uid = None if lease is None else lease.uid
    try:
        prepare_jobdir(workdir, uid)
        sandboxed = settings.sandbox != "none"
        lim = bwrap.limits(
            settings, cpu_seconds=settings.sandbox_cpu_seconds, memory_bytes=memory_bytes
        )
        with bwrap.sandboxed_argv(argv, workdir, settings, uid=uid) as (full, fds):
            proc = subprocess.Popen(
                full,
                cwd=workdir,
                env=child_env(JOB_DIR if sandboxed else workdir, job_threads(settings)),
                preexec_fn=bwrap.preexec(lim),  # noqa: PLW1509 - needed for rlimits
                pass_fds=fds,
            )
        disk = DiskWatch(lambda: workdir, bwrap.disk_bytes(settings), lambda: stop(proc))
        try:
            status = proc.wait()
        finally:
            disk.stop()
        if disk.exceeded:
            print(f"sandbox-exec: the command {disk.exceeded_message()}", file=sys.stderr)
        return status
    finally:
        if lease is not None:
            lease.release()
        shutil.rmtree(workdir, ignore_errors=True)


class DiskWatch:
    """Kills a sandbox whose folder holds more than ``cap`` bytes it wrote.

    Each file is already limited to ``cap`` (RLIMIT_FSIZE: the write past it fails); this
    bounds their sum, checked every ``DISK_POLL_S``. Files linked in by the worker (the
    inputs, cached soft labels) are not the sandbox's writes.
    """

    def __init__(self, folder: Callable[[], Path], cap: int, stop: Callable[[], None]) -> None:
        self.folder, self.cap, self._stop = folder, cap, stop
        self.exceeded = False
        self._linked: set[tuple[int, int]] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def not_written(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            st = path.stat()
            self._linked.add((st.st_dev, st.st_ino))

    def exceeded_message(self) -> str:
        return f"wrote more than {self.cap} bytes (STILLHOUSE_SANDBOX_DISK_BYTES) and was stopped"

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(DISK_POLL_S):
            if written_bytes(self.folder(), self._linked) > self.cap:
                self.exceeded = True
                self._stop()
                return


def written_bytes(folder: Path, skip: set[tuple[int, int]]) -> int:
    """Bytes on disk of the files under ``folder`` but its inputs, each inode once."""
    seen: set[tuple[int, int]] = set(skip)
    total = 0
    pending = [folder]
    while pending:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        if entry.path != str(folder / INPUTS):
                            pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if (st.st_dev, st.st_ino) not in seen:
                            seen.add((st.st_dev, st.st_ino))
                            total += st.st_blocks * 512
    return total
