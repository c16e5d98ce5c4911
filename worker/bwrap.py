"""The sandbox's walls: bubblewrap's command line, the resource limits and the job folder.

What a sandboxed process gets (``STILLHOUSE_SANDBOX=bwrap``, the default):
- its own network namespace (no network at all, not even the host's loopback), PID namespace
  (its own ``/proc``: no other process, no parent's environment), IPC and UTS namespaces;
- a read-only view of the system (``/usr``, the Python installation, the project's code) in
  which its job folder, mounted at ``/job``, is the only writable place; its inputs are hard
  links in ``/job/inputs``, mounted read-only. Nothing else of the data directory (other
  tenants' files, the SQLite database, the embedded broker) exists in its view;
- an unprivileged user, nobody (65534) in a user namespace of its own that may make no
  other. A worker running as root gives each sandbox a host uid of its own (``UIDS``, leased
  with a lock file), so the process limit (RLIMIT_NPROC counts a uid's processes) is per
  sandbox: one job's forks cannot starve the next. Any other worker can only use its own
  uid for every sandbox; there the limit is shared with the worker's other processes;
- no capabilities, ``no_new_privs``, a seccomp filter (``worker/seccomp.py``);
- CPU, memory, file-size, open-file and process limits (rlimits), and a cap on what
  it writes in all (``STILLHOUSE_SANDBOX_DISK_BYTES``, ``disk_bytes``): each file is
  limited to it, and the worker kills a child whose folder grows past it;
- it dies with its parent: bwrap with the worker, the command with bwrap (the parent-death
  signal is set again after the change of uid, which clears it). The command is pid 1
  (``--as-pid-1``): bwrap itself waits for it, so its CPU time and peak memory count in the
  worker's process tree, and when it dies every process it started dies with it.

Where the host cannot make namespaces, nothing runs: ``SandboxError(SANDBOX_UNAVAILABLE)``.
``STILLHOUSE_SANDBOX=none`` is the operator's explicit opt-out (limits and a scrubbed
environment only), for hosts that are themselves a sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import core
import engine
import stillhouse_contracts
import worker
from core.errors import ErrorCode
from core.settings import Settings
from worker import seccomp

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SANDBOX_UID = 65534  # "nobody": the sandbox's user, as it sees itself
# A root worker's sandboxes run as these host uids, one each (no host user has them).
UIDS = range(2_100_000_000, 2_100_000_000 + 4096)
PROBE_UID = UIDS.stop  # the availability probe's, outside the leased range
JOB_DIR = Path("/job")  # where the job folder appears inside the sandbox
TMP = Path("/tmp")
INPUTS = "inputs"  # the job folder's read-only part: hard links to the uploads
SHM_BYTES = 512 * 1024 * 1024  # data-loader workers' shared memory, private and bounded
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc holds secrets on many hosts: only what the dynamic loader and libc need.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf")
_ETC_MORE = ("localtime", "alternatives", "hosts", "os-release", "mime.types")
OPT_OUT_HINT = "or set STILLHOUSE_SANDBOX=none to run user files without a sandbox"


class SandboxError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process tree (``memory_bytes`` 0: none).

    ``memory_bytes`` caps what each process allocates (RLIMIT_DATA: its heap and private
    writable maps, what malloc, numpy, torch and onnxruntime get memory from), not its
    address space: a read-only map of a file (``np.load(mmap_mode="r")`` of a 4 GiB upload)
    is not memory it uses, its pages are the page cache's."""

    cpu_seconds: int
    memory_bytes: int
    file_bytes: int
    processes: int
    open_files: int = 1024


def limits(settings: Settings, *, cpu_seconds: int, memory_bytes: int) -> Limits:
    return Limits(
        cpu_seconds=cpu_seconds,
        memory_bytes=memory_bytes,
        file_bytes=min(settings.sandbox_file_bytes, disk_bytes(settings)),
        processes=settings.sandbox_max_processes,
    )


def disk_bytes(settings: Settings) -> int:
    """What one sandbox may write in all: the setting, or (0) a quarter of the disk that
    holds the data directory."""
    if settings.sandbox_disk_bytes > 0:
        return settings.sandbox_disk_bytes
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(settings.data_dir).total // 4


def job_memory_bytes(settings: Settings) -> int:
    """A job child's memory limit: none on a GPU host (CUDA maps far more memory than it
    uses), else the setting."""
    if any(Path("/dev").glob("nvidia[0-9]*")):
        return 0
    return settings.sandbox_memory_bytes


def preexec(lim: Limits) -> Callable[[], None]:
    """Run in the forked child before exec: its own session, death with us, the rlimits."""

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
            resource.setrlimit(resource.RLIMIT_DATA, (lim.memory_bytes, lim.memory_bytes))

    return apply


def as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class UidLease:
    """A host uid of ``UIDS`` held for one sandbox: its lock file stays locked (by this
    process, so a dead worker's leases free themselves) until ``release``."""

    uid: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lease_uid(settings: Settings) -> UidLease | None:
    """A uid of its own for a root worker's next sandbox; None for any other worker."""
    if not as_root() or settings.sandbox == "none":
        return None
    folder = settings.data_dir.resolve() / "sandbox-uids"
    folder.mkdir(parents=True, exist_ok=True)
    for uid in UIDS:
        fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidLease(uid, fd)
    raise SandboxError(ErrorCode.INTERNAL, f"all {len(UIDS)} sandbox uids are in use")


# --- the view of the file system ------------------------------------------------------------


def _code_paths() -> set[Path]:
    """Python and the project's packages, read-only at their own paths (the venv's scripts
    and the editable install point there): the packages, not the folder that holds them. The
    contracts come with the client's distribution (client/ in a checkout)."""
    code = {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.executable).resolve().parent,
        Path(worker.__file__).resolve().parent,
        Path(engine.__file__).resolve().parent,
        Path(core.__file__).resolve().parent,
        Path(stillhouse_contracts.__file__).resolve().parent,
    }
    return {path for path in code if not any(path.is_relative_to(d) for d in _SYSTEM_DIRS)}


class Opened:
    """File descriptors a sandbox's start hands to bwrap (the seccomp program); ``close``
    them once the child has started."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def add(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _system_mounts(tmp_bytes: int) -> list[str]:
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would make it 0700
    for name in (*_ETC, *_ETC_MORE):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    code = _code_paths()
    # bwrap would make the folders above a mount point 0700: unreadable to the sandbox's user.
    parents = {parent for path in code for parent in path.parents if parent != Path("/")}
    for parent in sorted(parents - code):
        if parent == TMP:  # a checkout under /tmp: /tmp is then a folder of its own (_tmp)
            args += ["--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", str(TMP)]
        else:
            args += ["--perms", "0755", "--dir", str(parent)]
    for path in sorted(code):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind-try", "/sys", "/sys"]
    for device in sorted(Path("/dev").glob("nvidia*")):  # a GPU job's devices
        args += ["--dev-bind", str(device), str(device)]
    return args


def private_paths(settings: Settings) -> list[Path]:
    """The data directory and the SQLite database's folder: never in a sandbox's view."""
    paths = {settings.data_dir.resolve()}
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        paths.add(Path(url.removeprefix("sqlite:///")).resolve().parent)
    return sorted(paths)


def _hidden(private: list[Path], system: list[str]) -> list[str]:
    """Cover a private path with an empty folder should a mounted folder contain it."""
    mounted = [system[i + 1] for i, arg in enumerate(system) if arg == "--ro-bind"]
    args: list[str] = []
    for path in private:
        if any(path.is_relative_to(source) for source in mounted):
            args += ["--tmpfs", str(path)]
    return args


def _tmp(system: list[str]) -> list[str]:
    """``/tmp`` is the job's ``tmp`` folder (under the job's disk cap), unless code is mounted
    below it (a checkout under /tmp): then it is a folder in memory of the cap's size at most
    (``_system_mounts``), gone with the sandbox, and ``TMPDIR`` still points into the job
    folder."""
    if any(Path(arg).is_relative_to(TMP) for arg in system if arg.startswith("/")):
        return []
    return ["--symlink", str(JOB_DIR / "tmp"), str(TMP)]


def _identity(uid: int | None) -> tuple[list[str], list[str]]:
    """bwrap's options for the sandbox's user, and the privilege drop run after bwrap.

    A root worker's sandbox runs as its own host ``uid`` (dropped to by setpriv); any other
    worker's as nobody in a user namespace that may make no other. The parent-death signal
    is set again after the drop (a change of uid clears it)."""
    setpriv = shutil.which("setpriv") or "setpriv"
    death = "--pdeathsig=SIGKILL"
    if uid is not None:  # no user namespace: a real uid of its own, dropped to by setpriv
        identity = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", death]
    else:  # an unprivileged user already: nobody inside a user namespace
        identity = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        identity.append("--disable-userns")
        drop = [setpriv, "--no-new-privs", death]
    return identity, drop


def bwrap_argv(
    jobdir: Path,
    private: list[Path],
    *,
    uid: int | None,
    tmp_bytes: int,
    opened: Opened,
) -> list[str]:
    """The ``bwrap ... --`` prefix (and the privilege drop after it) for ``jobdir``, run as
    the host ``uid`` (a root worker's); the file descriptors it needs join ``opened``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None or shutil.which("setpriv") is None:
        raise SandboxError(
            ErrorCode.SANDBOX_UNAVAILABLE,
            "bubblewrap (bwrap) or setpriv is not installed: install the bubblewrap and "
            f"util-linux packages, {OPT_OUT_HINT}",
        )
    system = _system_mounts(tmp_bytes)
    identity, drop = _identity(uid)
    # A root worker's bwrap cannot signal the command's uid: the reaper kills the sandbox
    # when the worker dies (worker/reaper.py).
    reaper = [] if uid is None else [sys.executable, "-m", "worker.reaper"]
    filtered = []
    if seccomp.supported():
        filtered = ["--seccomp", str(opened.add(seccomp.program_fd()))]
    return [
        *reaper,
        bwrap,
        *("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"),
        "--unshare-cgroup-try",
        *identity,
        *("--die-with-parent", "--new-session"),
        # The command is pid 1 (no bwrap init): bwrap waits for it, so its CPU time and
        # memory count in the worker's (a reaped init's would be lost to the host's init).
        "--as-pid-1",
        *system,
        *_hidden(private, system),
        *("--proc", "/proc", "--dev", "/dev"),
        *("--size", str(SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm"),
        *("--bind", str(jobdir), str(JOB_DIR)),
        *_tmp(system),
        *("--ro-bind", str(jobdir / INPUTS), str(JOB_DIR / INPUTS)),
        # The root bwrap made is a folder in memory the sandbox's user owns: read-only.
        *("--remount-ro", "/"),
        *filtered,
        *("--chdir", str(JOB_DIR)),
        "--",
        *drop,
    ]


# --- can this host make one? ------------------------------------------------------------------


@functools.cache
def _probe(root: bool) -> str | None:
    """Why bwrap cannot build a sandbox on this host, or None when it can (asked once)."""
    scratch = Path(tempfile.mkdtemp(prefix="stillhouse-probe-"))
    uid = PROBE_UID if root else None
    opened = Opened()
    try:
        prepare_jobdir(scratch, uid)
        prefix = bwrap_argv(scratch, [], uid=uid, tmp_bytes=1 << 20, opened=opened)
        done = subprocess.run(
            [*prefix, "/bin/true"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            pass_fds=opened.fds,
        )
    except SandboxError as exc:
        return exc.message
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not run: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        opened.close()
    if done.returncode != 0:
        return (
            f"bwrap cannot create namespaces on this host ({done.stderr.strip()[:200]}); "
            f"allow user namespaces (or run the worker with the needed privileges), {OPT_OUT_HINT}"
        )
    return None


def check_available(settings: Settings) -> None:
    """Raise ``SandboxError(SANDBOX_UNAVAILABLE)`` unless a sandbox can be made here."""
    if settings.sandbox == "none":
        return
    problem = _probe(as_root())
    if problem is not None:
        raise SandboxError(ErrorCode.SANDBOX_UNAVAILABLE, problem)


@contextlib.contextmanager
def sandboxed_argv(
    argv: list[str], jobdir: Path, settings: Settings, *, uid: int | None = None
) -> Iterator[tuple[list[str], list[int]]]:
    """``argv`` as it runs in the sandbox of ``jobdir`` (unchanged with the opt-out), as the
    host ``uid`` (a root worker's lease), and the file descriptors to pass it: start the
    child inside the block."""
    if settings.sandbox == "none":
        _warn_unsandboxed()
        yield argv, []
        return
    check_available(settings)
    opened = Opened()
    try:
        prefix = bwrap_argv(
            jobdir, private_paths(settings), uid=uid, tmp_bytes=disk_bytes(settings), opened=opened
        )
        yield [*prefix, *argv], list(opened.fds)
    finally:
        opened.close()


@functools.cache
def _warn_unsandboxed() -> None:
    log.warning(
        "STILLHOUSE_SANDBOX=none: user files are parsed and teacher code runs WITHOUT a "
        "sandbox (no namespaces, the host's files and network are reachable)"
    )


# --- the job folder ---------------------------------------------------------------------------


def prepare_jobdir(jobdir: Path, uid: int | None) -> None:
    """Create the job folder, its inputs and its tmp (``/tmp`` inside)."""
    (jobdir / INPUTS).mkdir(parents=True, exist_ok=True)
    (jobdir / "tmp").mkdir(exist_ok=True)
    hand_over(jobdir, uid)


def hand_over(jobdir: Path, uid: int | None) -> None:
    """A root worker's sandbox user (host ``uid``) must own what it writes: the folder and
    everything in it but the inputs (read-only, and links to stored files) and the linked
    cache. Any other worker's sandboxes write as the worker (``uid`` None)."""
    if uid is None:
        return
    os.chown(jobdir, uid, uid)
    for entry in jobdir.iterdir():
        if entry.name in (INPUTS, "cache") or entry.is_symlink():
            continue
        os.chown(entry, uid, uid)
        if entry.is_dir():
            for folder, dirs, files in os.walk(entry):
                for name in (*dirs, *files):
                    os.chown(Path(folder) / name, uid, uid, follow_symlinks=False)


def link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


def stage_input(jobdir: Path, name: str, source: Path) -> Path:
    """Hard-link ``source`` into the job's read-only inputs (a copy across filesystems)."""
    target = jobdir / INPUTS / name
    link_or_copy(source, target)
    if as_root():  # the sandbox's user reads it; the mount is read-only for everyone
        os.chmod(target, 0o644)
    return target
