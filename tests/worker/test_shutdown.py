"""The stop mark a SIGTERM'd worker leaves for the pool process running its job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from worker import shutdown


def test_a_mark_is_seen_by_its_own_worker_only_and_cleared_once_its_worker_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process plays the worker's main process (another test may have set it otherwise).
    monkeypatch.setattr(shutdown, "_main_pid", os.getpid())
    settings = Settings(data_dir=tmp_path)
    assert not shutdown.stopping(settings)  # this process is its own "main process" here
    shutdown.mark_stopping(settings)
    assert shutdown.stopping(settings)
    work, host = tmp_path / "work", socket.gethostname()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for pid in (gone, "1"):  # a worker that ended, and one that runs (pid 1 always does)
        (work / f".stopping-{host}-{pid}").touch()
    shutdown.clear_marks(settings)  # at this process's start: its own mark is stale
    assert not shutdown.stopping(settings)
    assert sorted(p.name for p in work.iterdir()) == [f".stopping-{host}-1"]
    assert os.getpid() != 1
