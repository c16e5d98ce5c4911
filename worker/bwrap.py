"""The sandbox's walls: bubblewrap's command line, the resource limits and the job folder.

What a sandboxed process gets (``STILLHOUSE_SANDBOX=bwrap``, the default):
- its own network namespace (no network at all, not even the host's loopback), PID namespace
  (its own ``/proc``: no other process, no parent's environment), IPC and UTS namespaces;
- a read-only view of the system (``/usr``, the Python installation, the project's code) in
  which its job folder, mounted at ``/job``, is the only writable place; its inputs are hard
  links in ``/job/inputs``, mounted read-only. Nothing else of the data directory (other
  tenants' files, the SQLite database, the embedded broker) exists in its view;
- an unprivileged user (uid 65534: a worker running as root drops to it with setpriv, any
  other worker runs it in a user namespace), no capabilities, ``no_new_privs``;
- CPU, address-space, file-size, open-file and process limits (rlimits); it dies with its
  parent. The command is pid 1 (``--as-pid-1``): bwrap itself waits for it, so its CPU time
  and peak memory count in the worker's process tree.

Where the host cannot make namespaces, nothing runs: ``SandboxError(SANDBOX_UNAVAILABLE)``.
``STILLHOUSE_SANDBOX=none`` is the operator's explicit opt-out (limits and a scrubbed
environment only), for hosts that are themselves a sandbox.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import core
import worker
from core.errors import ErrorCode
from core.settings import Settings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SANDBOX_UID = 65534  # "nobody": owns no file of the host
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
    """Resource limits of one sandboxed process tree (``memory_bytes`` 0: none)."""

    cpu_seconds: int
    memory_bytes: int
    file_bytes: int
    processes: int
    open_files: int = 1024


def limits(settings: Settings, *, cpu_seconds: int, memory_bytes: int) -> Limits:
    return Limits(
        cpu_seconds=cpu_seconds,
        memory_bytes=memory_bytes,
        file_bytes=settings.sandbox_file_bytes,
        processes=settings.sandbox_max_processes,
    )


def job_memory_bytes(settings: Settings) -> int:
    """A job child's address-space limit: none on a GPU host (CUDA maps far more virtual
    memory than it uses), else the setting."""
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
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))

    return apply


def as_root() -> bool:
    return os.geteuid() == 0


# --- the view of the file system ------------------------------------------------------------


def _code_paths() -> set[Path]:
    """Python and the project's packages, read-only at their own paths (the venv's scripts
    and the editable install point there): the packages, not the folder that holds them."""
    code = {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.executable).resolve().parent,
        Path(worker.__file__).resolve().parent,
        Path(core.__file__).resolve().parent,
    }
    return {path for path in code if not any(path.is_relative_to(d) for d in _SYSTEM_DIRS)}


def _system_mounts() -> list[str]:
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
        # A checkout under /tmp: /tmp is then a folder of the sandbox's own (see bwrap_argv).
        perms = "1777" if parent == TMP else "0755"
        args += ["--perms", perms, "--dir", str(parent)]
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
    """``/tmp`` is the job's ``tmp`` folder, unless code is mounted below it (a checkout
    under /tmp): then it stays the sandbox's own folder (in memory, gone with the sandbox)
    and ``TMPDIR`` still points into the job folder."""
    if any(Path(arg).is_relative_to(TMP) for arg in system if arg.startswith("/")):
        return []
    return ["--symlink", str(JOB_DIR / "tmp"), str(TMP)]


def _identity() -> tuple[list[str], list[str]]:
    """bwrap's options for the sandbox's user, and the privilege drop run after bwrap."""
    setpriv = shutil.which("setpriv") or "setpriv"
    if as_root():  # no user namespace: a real uid of its own, dropped to by setpriv
        identity = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        drop = [setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
        drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:  # an unprivileged user already: nobody inside a user namespace
        identity = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        drop = [setpriv, "--no-new-privs"]
    return identity, drop


def bwrap_argv(jobdir: Path, private: list[Path]) -> list[str]:
    """The ``bwrap ... --`` prefix (and the privilege drop after it) for ``jobdir``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None or shutil.which("setpriv") is None:
        raise SandboxError(
            ErrorCode.SANDBOX_UNAVAILABLE,
            "bubblewrap (bwrap) or setpriv is not installed: install the bubblewrap and "
            f"util-linux packages, {OPT_OUT_HINT}",
        )
    system = _system_mounts()
    identity, drop = _identity()
    return [
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
        *("--chdir", str(JOB_DIR)),
        "--",
        *drop,
    ]


# --- can this host make one? ------------------------------------------------------------------


@functools.cache
def _probe(root: bool) -> str | None:
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


# --- the job folder ---------------------------------------------------------------------------


def prepare_jobdir(jobdir: Path) -> None:
    """Create the job folder, its inputs and its tmp (``/tmp`` inside)."""
    (jobdir / INPUTS).mkdir(parents=True, exist_ok=True)
    (jobdir / "tmp").mkdir(exist_ok=True)
    hand_over(jobdir)


def hand_over(jobdir: Path) -> None:
    """A root worker's sandbox user must own what it writes: the folder and everything in
    it but the inputs (read-only, and links to stored files) and the linked cache."""
    if not as_root():
        return
    os.chown(jobdir, SANDBOX_UID, SANDBOX_UID)
    for entry in jobdir.iterdir():
        if entry.name in (INPUTS, "cache") or entry.is_symlink():
            continue
        os.chown(entry, SANDBOX_UID, SANDBOX_UID)
        if entry.is_dir():
            for folder, dirs, files in os.walk(entry):
                for name in (*dirs, *files):
                    os.chown(Path(folder) / name, SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)


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
