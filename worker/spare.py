"""The spare: a sandboxed child a worker process starts ahead of the work it will get.

It imports what its request will import while it waits (``STILLHOUSE_CHILD_PRELOAD``: a
job's modules and export paths on a gpu worker, the guarded loaders on a validate worker), so
the next job or upload starts warm; it is handed one request only, then it is that request's
child (one user's files never meet another's process). At most one per kind and worker
process, held by a ``Spare``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from core.settings import Settings, get_settings
from worker.sandbox import Child, Preload
from worker.shutdown import pid_alive, stopping

log = logging.getLogger(__name__)

# A child's limits under the settings: (threads, cpu_seconds, memory_bytes).
Limits = Callable[[Settings], tuple[int, int, int]]


def drop(child: Child) -> None:
    """End a child that never adopted a job's folder, and remove its own folder."""
    child.close()
    shutil.rmtree(child.workdir, ignore_errors=True)


class Spare:
    """This process's spare child (``child``), started with ``limits`` and taken once."""

    def __init__(self, limits: Limits, preload: Preload = "job") -> None:
        self.limits, self.preload = limits, preload
        self.child: Child | None = None

    def start(self, settings: Settings | None = None) -> None:
        """Start a spare unless one is alive (or spares are off, or the worker stops).

        Never raises: a spare only saves time, so failing to start one is logged, not fatal
        (it runs after a job and at pool start, where an exception would replace the real
        outcome)."""
        try:
            settings = settings or get_settings()
            if not settings.spare_child or (self.child is not None and self.child.alive()):
                return
            if stopping(settings):  # no job will come
                return
            if self.child is not None:  # died while waiting
                drop(self.child)
                self.child = None
            work = (settings.data_dir / "work").resolve()
            _remove_orphans(work)
            threads, cpu_seconds, memory_bytes = self.limits(settings)
            host = socket.gethostname()
            self.child = Child(
                None,
                # The kind in the name: a worker may hold a job's spare and upload ones.
                workdir=work / f".spare-{host}-{os.getpid()}-{self.preload}-{secrets.token_hex(4)}",
                threads=threads,
                memory_bytes=memory_bytes,
                cpu_seconds=cpu_seconds,
                preload=self.preload,
                settings=settings,
            )
        except Exception:
            log.exception("could not start a spare sandbox child; jobs start cold")

    def take(self, settings: Settings, request: BaseModel, jobdir: Path) -> Child | None:
        """The spare, moved into ``jobdir`` (its sandbox's folder) and handed ``request``;
        None when there is no live spare with these limits."""
        child, self.child = self.child, None
        if child is None:
            return None
        limits = (child.threads, child.cpu_seconds, child.memory_bytes)
        try:
            if child.alive() and limits == self.limits(settings):
                child.adopt(jobdir)
                child.send(request)
                return child
        except BrokenPipeError:  # it died just now: start cold instead
            pass
        except BaseException:  # the request could not be staged: the caller says why
            _discard(child, jobdir)
            raise
        _discard(child, jobdir)
        return None


def _discard(child: Child, jobdir: Path) -> None:
    if child.workdir == jobdir:  # adopted: the folder (and its checkpoints) is the job's
        child.close()
    else:
        drop(child)


def _remove_orphans(work: Path) -> None:
    """Folders of spares of this host's processes that are gone (the folder may be shared by
    several hosts or containers, whose process ids mean nothing here)."""
    host = socket.gethostname()
    for old in work.glob(f".spare-{host}-*"):
        pid = old.name[len(f".spare-{host}-") :].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
