"""A worker that is asked to stop (SIGTERM: Celery's warm shutdown) hands its running job back.

Celery's warm shutdown waits for the running task to end, which for a job can be hours. Its
main process marks the stop with a file named after itself (``mark_stopping``, from the
``worker_shutting_down`` signal); the pool process running the job finds the file on its
next poll (``stopping``), stops the engine at a checkpoint and gives the job back to the
queue, where the next worker resumes it. A file, since the pool process is not told of the
shutdown; named by host and process id, since several workers may share the data folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from core.settings import Settings

# The pid of the worker's main process, as the pool process running jobs knows it.
_main_pid = os.getpid()


def _mark(settings: Settings, main_pid: int) -> Path:
    work = (settings.data_dir / "work").resolve()
    return work / f".stopping-{socket.gethostname()}-{main_pid}"


def mark_stopping(settings: Settings) -> None:
    """In the worker's main process, when it begins to stop."""
    mark = _mark(settings, os.getpid())
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()


def clear_marks(settings: Settings) -> None:
    """In the worker's main process, at start: marks of this host's workers that are gone,
    its own pid's included (left by an earlier process of the same id)."""
    prefix = _mark(settings, 0).name[:-1]
    for mark in _mark(settings, 0).parent.glob(f"{prefix}*"):
        pid = mark.name[len(prefix) :]
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            mark.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pool_process_started() -> None:
    """In a pool process: its main process is its parent."""
    global _main_pid
    _main_pid = os.getppid()


def stopping(settings: Settings) -> bool:
    return _mark(settings, _main_pid).exists()
