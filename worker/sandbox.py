"""Run user files' parsers and teacher code in a sandbox: a child process inside bubblewrap.

The child is ``python -m worker.distill.child``. It reads one JSON request on stdin and writes
JSON lines on stdout: ``{"event": "progress", ...}`` any number of times, then exactly one
``{"event": "result", ...}`` or ``{"event": "error", "code", "message"}``.

What the child gets (``STILLHOUSE_SANDBOX=bwrap``, the default; see ``bwrap_argv``):
- its own network namespace (no network at all, not even the host's loopback), PID namespace
  (its own ``/proc``: no other process, no parent's environment), IPC and UTS namespaces;
- a read-only view of the system (``/usr``, the Python installation, the project's code) in
  which the job folder, mounted at ``/job``, is the only writable place; its inputs are
  hard links in ``/job/inputs``, mounted read-only. Nothing else of the data directory
  (other tenants' files, the database, the broker) exists in its view;
- an unprivileged user (uid 65534: a worker running as root drops to it, any other worker
  runs it in a user namespace), no capabilities, ``no_new_privs``;
- CPU, address-space, file-size, open-file and process limits, and an environment with only
  ``KEEP_ENV`` and its own settings (no database or broker URL, no keys);
- it dies with its parent.

Where the host cannot make namespaces, nothing runs: ``SandboxError("sandbox_unavailable")``.
``STILLHOUSE_SANDBOX=none`` is the operator's explicit opt-out (limits and scrubbed
environment only), for hosts that are themselves a sandbox.

A child may be started before its request exists (``request=None``, ``preload=True``): it
imports torch and warms the export paths while it waits on stdin, and ``send`` hands it the
request later. The gpu worker keeps one such spare; ``adopt`` turns the spare's folder into
the job's folder (the mount follows the renamed folder), so a spare serves any job.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import core
import worker
from core.errors import ErrorCode
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
PR_SET_PDEATHSIG = 1
SANDBOX_UID = 65534  # "nobody": owns no file of the host
JOB_DIR = Path("/job")  # where the job folder appears inside the sandbox
INPUTS = "inputs"  # the job folder's read-only part: hard links to the uploads
SHM_BYTES = 512 * 1024 * 1024
EXIT_GRACE_S = 2.0  # for a child that wrote its last line to end on its own
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc holds secrets on many hosts: only what the dynamic loader and libc need.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf")
_ETC_MORE = ("localtime", "alternatives", "hosts", "os-release", "mime.types")


class SandboxError(Exception):
    def __init__(self, code: str, message: str, peak_rss_bytes: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.peak_rss_bytes = peak_rss_bytes  # the child's, when it reported an error


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process tree (``memory_bytes`` 0: none)."""

    cpu_seconds: int
    memory_bytes: int
    file_bytes: int
    processes: int
    open_files: int = 1024


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def job_memory_bytes(settings: Settings) -> int:
    """The address-space limit of a job's child: the setting, else half of this host's memory.

    On a GPU host there is none: CUDA maps far more virtual memory than it uses.
    """
    if any(Path("/dev").glob("nvidia[0-9]*")):
        return 0
    return settings.sandbox_memory_bytes or host_memory_bytes() // 2


def job_threads(settings: Settings) -> int:
    return settings.torch_threads or (os.cpu_count() or 1)


def limits(settings: Settings, *, cpu_seconds: int, memory_bytes: int) -> Limits:
    return Limits(
        cpu_seconds=cpu_seconds,
        memory_bytes=memory_bytes,
        file_bytes=settings.sandbox_file_bytes,
        processes=settings.sandbox_max_processes,
    )


def upload_caps(settings: Settings) -> dict[str, int]:
    """The caps on uploads, as the child's request carries them (``guard.Caps``)."""
    return {
        "max_entries": settings.max_archive_entries,
        "max_unpacked_bytes": settings.max_unpacked_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_compression_ratio": settings.max_compression_ratio,
    }


def _project_root() -> str:
    return str(Path(worker.__file__).resolve().parent.parent)


def child_env(home: Path, threads: int) -> dict[str, str]:
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


def _preexec(lim: Limits) -> Callable[[], None]:
    def apply() -> None:
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.open_files, lim.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes, lim.file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (lim.processes, lim.processes))
        if lim.memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))

    return apply


# --- the bubblewrap command line ------------------------------------------------------------


def _as_root() -> bool:
    return os.geteuid() == 0


def _system_mounts() -> list[str]:
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    for name in (*_ETC, *_ETC_MORE):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # Python and the project's code: read-only, at their own paths (the venv's scripts and
    # the editable install point there). Only the packages, not the folder that holds them.
    code = {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.executable).resolve().parent,
        Path(worker.__file__).resolve().parent,
        Path(core.__file__).resolve().parent,
    }
    code = {path for path in code if not any(path.is_relative_to(d) for d in _SYSTEM_DIRS)}
    # bwrap would make the folders above a mount point 0700: unreadable to the sandbox's user.
    parents = {parent for path in code for parent in path.parents if parent != Path("/")}
    for parent in sorted(parents - code):
        args += ["--perms", "0755", "--dir", str(parent)]
    for path in sorted(code):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind-try", "/sys", "/sys"]
    for device in sorted(Path("/dev").glob("nvidia*")):  # a GPU job's devices
        args += ["--dev-bind", str(device), str(device)]
    return args


def private_paths(settings: Settings) -> list[Path]:
    """The data directory and the database's folder: never in a sandbox's view."""
    paths = {settings.data_dir.resolve()}
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        paths.add(Path(url.removeprefix("sqlite:///")).resolve().parent)
    return sorted(paths)


def _hidden(private: list[Path], mounted: list[str]) -> list[str]:
    """Cover a private path with an empty folder should a mounted folder contain it."""
    args: list[str] = []
    for path in private:
        if any(path.is_relative_to(source) for source in mounted):
            args += ["--tmpfs", str(path)]
    return args


def bwrap_argv(jobdir: Path, private: list[Path]) -> list[str]:
    """The ``bwrap ... --`` prefix (and the privilege drop after it) for ``jobdir``."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None or setpriv is None:
        raise SandboxError(
            ErrorCode.SANDBOX_UNAVAILABLE,
            "bubblewrap (bwrap) or setpriv is not installed: install the bubblewrap package, "
            "or set STILLHOUSE_SANDBOX=none to run user files without a sandbox",
        )
    system = _system_mounts()
    mounted = [system[i + 1] for i, arg in enumerate(system) if arg == "--ro-bind"]
    namespaces = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    namespaces += ["--unshare-cgroup-try"]
    if _as_root():  # no user namespace: a real uid of its own, dropped to by setpriv
        identity = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        drop = [setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
        drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:  # an unprivileged user already: nobody inside a user namespace
        identity = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        drop = [setpriv, "--no-new-privs"]
    return [
        bwrap,
        *namespaces,
        *identity,
        "--die-with-parent",
        "--new-session",
        # The command is pid 1 (no bwrap init): bwrap waits for it, so its CPU time and
        # memory count in the worker's (a reaped init's would be lost to the host's init).
        "--as-pid-1",
        *system,
        *_hidden(private, mounted),
        *("--proc", "/proc", "--dev", "/dev"),
        # Shared memory of data-loader workers: private to this sandbox, and bounded.
        *("--size", str(SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm"),
        *("--bind", str(jobdir), str(JOB_DIR)),
        *("--symlink", str(JOB_DIR / "tmp"), "/tmp"),
        *("--ro-bind", str(jobdir / INPUTS), str(JOB_DIR / INPUTS)),
        *("--chdir", str(JOB_DIR)),
        "--",
        *drop,
    ]


@functools.cache
def _probe(as_root: bool) -> str | None:
    """Why bwrap cannot build a sandbox on this host, or None when it can (asked once)."""
    scratch = Path(tempfile.mkdtemp(prefix="stillhouse-probe-"))
    try:
        prepare_jobdir(scratch)
        argv = [*bwrap_argv(scratch, []), "/bin/true"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except SandboxError as exc:
        return exc.message
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not run: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        return (
            f"bwrap cannot create namespaces on this host ({done.stderr.strip()[:200]}); "
            "allow user namespaces (or run the worker with the needed privileges), "
            "or set STILLHOUSE_SANDBOX=none to run user files without a sandbox"
        )
    return None


def check_available(settings: Settings) -> None:
    """Raise ``SandboxError("sandbox_unavailable")`` unless a sandbox can be made here."""
    if settings.sandbox == "none":
        return
    problem = _probe(_as_root())
    if problem is not None:
        raise SandboxError(ErrorCode.SANDBOX_UNAVAILABLE, problem)


def prepare_jobdir(jobdir: Path) -> None:
    """Create the job folder, its inputs and its tmp (``/tmp`` inside); the sandbox's user
    must own the folder and its tmp."""
    (jobdir / INPUTS).mkdir(parents=True, exist_ok=True)
    (jobdir / "tmp").mkdir(exist_ok=True)
    if _as_root():
        os.chown(jobdir, SANDBOX_UID, SANDBOX_UID)
        os.chown(jobdir / "tmp", SANDBOX_UID, SANDBOX_UID)


def sandboxed_argv(argv: list[str], jobdir: Path, settings: Settings) -> list[str]:
    """``argv`` as it runs in the sandbox of ``jobdir`` (unchanged with the opt-out)."""
    if settings.sandbox == "none":
        _warn_unsandboxed()
        return argv
    check_available(settings)
    return [*bwrap_argv(jobdir, private_paths(settings)), *argv]


@functools.cache
def _warn_unsandboxed() -> None:
    log.warning(
        "STILLHOUSE_SANDBOX=none: user files are parsed and teacher code runs WITHOUT a "
        "sandbox (no namespaces, the host's files and network are reachable)"
    )


def stage_input(jobdir: Path, name: str, source: Path) -> Path:
    """Hard-link ``source`` into the job's read-only inputs (a copy across filesystems)."""
    target = jobdir / INPUTS / name
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    if _as_root():  # the sandbox's user reads it; the mount is read-only for everyone
        os.chmod(target, 0o644)
    return target


# --- the child ------------------------------------------------------------------------------


class Child:
    """A running sandboxed child. ``lines()`` yields its JSON lines as they come.

    ``workdir`` is the job folder (``/job`` inside). Paths in a request are paths inside:
    ``inside`` and ``outside`` translate; ``stage`` places an input file.
    """

    def __init__(
        self,
        request: dict[str, Any] | None,
        *,
        workdir: Path,
        threads: int,
        memory_bytes: int,
        cpu_seconds: int,
        preload: bool = False,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.sandboxed = settings.sandbox != "none"
        self.workdir, self.threads, self.cpu_seconds = workdir, threads, cpu_seconds
        self.memory_bytes = memory_bytes
        prepare_jobdir(workdir)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        env = child_env(JOB_DIR if self.sandboxed else workdir, threads)
        if preload:
            env["STILLHOUSE_CHILD_PRELOAD"] = "1"
        argv = [sys.executable, "-m", "worker.distill.child"]
        lim = limits(settings, cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
        self.proc = subprocess.Popen(
            sandboxed_argv(argv, workdir, settings),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            preexec_fn=_preexec(lim),  # noqa: PLW1509 - needed for rlimits
            text=True,
        )
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        if request is not None:
            self.send(request)

    def inside(self, path: Path) -> str:
        """The child's name for ``path``, a path in the job folder."""
        if not self.sandboxed:
            return str(path)
        return str(JOB_DIR / Path(path).relative_to(self.workdir))

    def outside(self, path: str) -> Path:
        """Our name for the child's ``path``; only paths in the job folder are accepted."""
        if not self.sandboxed:
            return Path(path)
        relative = Path(os.path.normpath(path)).relative_to(JOB_DIR)
        if ".." in relative.parts:
            raise SandboxError(
                ErrorCode.INTERNAL, f"the child named a path outside its folder: {path}"
            )
        return self.workdir / relative

    def stage(self, name: str, source: Path) -> str:
        """Make ``source`` readable to the child as ``inputs/name``; return the child's path."""
        if not self.sandboxed:
            return str(source)
        return self.inside(stage_input(self.workdir, name, source))

    def adopt(self, jobdir: Path) -> None:
        """Make ``jobdir`` this child's folder: its content (checkpoints of an earlier
        attempt) moves into ours, then ours takes its name. Renaming keeps the mount."""
        if not self.sandboxed or jobdir == self.workdir:
            return
        self._await_ready()  # bwrap has made its mounts: a rename can no longer confuse it
        if jobdir.exists():
            for entry in jobdir.iterdir():
                if entry.name != INPUTS:
                    shutil.rmtree(self.workdir / entry.name, ignore_errors=True)
                    entry.rename(self.workdir / entry.name)
            shutil.rmtree(jobdir)
        jobdir.parent.mkdir(parents=True, exist_ok=True)
        self.workdir.rename(jobdir)
        self.workdir = jobdir

    def _await_ready(self) -> None:
        """Wait for the child's first line, ``{"event": "ready"}``; BrokenPipeError if it
        ended instead."""
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            if line.startswith('{"event": "ready"'):
                return
        raise BrokenPipeError("the child ended before it was ready")

    def send(self, request: dict[str, Any]) -> None:
        """Hand the child its one request (it starts work when stdin closes)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request))
        self.proc.stdin.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def lines(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event

    def kill(self, grace_s: float = 0.0) -> None:
        """Stop the child, after ``grace_s`` for it to end on its own (after its last line:
        then bwrap reaps it, and its CPU time counts in ours; a killed bwrap's would not)."""
        if grace_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self, grace_s: float = 0.0) -> None:
        """Kill (if running) and close the pipes. Call it once nothing reads ``lines()``."""
        self.kill(grace_s)
        self._stderr_thread.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def crash_message(self) -> str:
        return crash_message(self.proc.wait(), list(self.stderr_tail)[-8:])


def crash_message(rc: int, tail: list[str]) -> str:
    # bwrap reports a child killed by signal N as the exit status 128 + N.
    signum = -rc if rc < 0 else rc - 128 if 128 < rc < 160 else 0
    if signum:
        reason = f"killed by signal {signal.Signals(signum).name}"
        if signum in (signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ):
            reason += " (a resource limit, or the worker stopped it)"
    else:
        reason = f"exited with status {rc}"
    text = "\n".join(tail)
    return f"the teacher process {reason}" + (f": {text}" if text else "")


def run_once(
    request: dict[str, Any],
    *,
    inputs: dict[str, Path],
    threads: int = 1,
    memory_bytes: int,
    cpu_seconds: int,
    timeout_s: float,
    settings: Settings | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one request to completion in a fresh job folder and return its result, or raise
    ``SandboxError``. ``inputs`` maps request keys to files the child reads."""
    settings = settings or get_settings()
    jobdir = settings.data_dir.resolve() / "work" / f".once-{secrets.token_hex(8)}"
    try:
        child = Child(
            None,
            workdir=jobdir,
            threads=threads,
            memory_bytes=memory_bytes,
            cpu_seconds=cpu_seconds,
            settings=settings,
        )
        try:
            staged = {key: child.stage(key, path) for key, path in inputs.items()}
            return _finish(child, {**request, **staged}, timeout_s, on_progress)
        finally:
            child.close(EXIT_GRACE_S)
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)


def run_command(argv: list[str], *, settings: Settings, memory_bytes: int) -> int:
    """Run ``argv`` in a fresh job folder's sandbox, stdio inherited; its exit status.
    The same user, namespaces, limits and environment as a job's engine child."""
    jobdir = settings.data_dir.resolve() / "work" / f".exec-{secrets.token_hex(8)}"
    try:
        prepare_jobdir(jobdir)
        sandboxed = settings.sandbox != "none"
        lim = limits(settings, cpu_seconds=settings.sandbox_cpu_seconds, memory_bytes=memory_bytes)
        done = subprocess.run(
            sandboxed_argv(argv, jobdir, settings),
            cwd=jobdir,
            env=child_env(JOB_DIR if sandboxed else jobdir, job_threads(settings)),
            preexec_fn=_preexec(lim),  # noqa: PLW1509 - needed for rlimits
            check=False,
        )
        return done.returncode
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)


def _finish(
    child: Child,
    request: dict[str, Any],
    timeout_s: float,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    try:
        child.send(request)
    except BrokenPipeError:
        raise SandboxError(ErrorCode.TEACHER_CRASHED, child.crash_message()) from None
    timer = threading.Timer(timeout_s, child.kill)
    timer.start()
    try:
        for event in child.lines():
            kind = event.get("event")
            if kind == "progress" and on_progress is not None:
                on_progress(event)
            elif kind == "result":
                return dict(event)
            elif kind == "error":
                peak = event.get("peak_rss_bytes")
                raise SandboxError(
                    str(event.get("code")),
                    str(event.get("message")),
                    peak if isinstance(peak, int) else None,
                )
        raise SandboxError(ErrorCode.TEACHER_CRASHED, child.crash_message())
    finally:
        timer.cancel()
