"""Runs a root worker's bwrap so that nothing of the sandbox outlives the worker.

``python -m worker.reaper CMD...``. The sandboxed command runs as a uid of its own, and its
parent, bwrap, is root without capabilities: the kernel does not let such a process signal
another uid, so the parent-death signal of the command never arrives and a ``kill -9`` of
the worker left it running. This process stays root: it is a child subreaper (every orphan
of the sandbox becomes its child), it gets SIGTERM when the worker dies (and from the worker
to stop the sandbox), and then it kills every process below it. It exits with CMD's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from types import FrameType

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def descendants() -> list[int]:
    """Every process below this one (orphans of the sandbox included: we are a subreaper)."""
    found: list[int] = []
    pending = [os.getpid()]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
                    found += children
                    pending += children
    return found


def kill_all() -> None:
    for _ in range(100):  # a fork may land between a listing and the kills: list again
        pids = descendants()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def _stop(signum: int, frame: FrameType | None) -> None:
    kill_all()
    os._exit(128 + signum)


def main(argv: list[str]) -> int:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, _stop)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before the signal was armed
        return 128 + signal.SIGTERM
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execvp(argv[0], argv)
    while True:  # reap orphans as they come, until the command itself ends
        done, status = os.waitpid(-1, 0)
        if done == pid:
            break
    kill_all()
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
