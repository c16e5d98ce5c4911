"""The stop file carries its reason from the worker to the engine, and back as an event."""

from __future__ import annotations

from pathlib import Path

from core.atomic import atomic_write
from engine.job import stop_reason


def test_the_stop_file_says_cancel_or_shutdown(tmp_path: Path) -> None:
    stop = tmp_path / "STOP"
    atomic_write(stop, b"cancel")
    assert stop_reason(stop) == "cancel"
    atomic_write(stop, b"shutdown")
    assert stop_reason(stop) == "shutdown"


def test_an_unreadable_or_foreign_stop_file_is_a_shutdown_never_a_cancel(tmp_path: Path) -> None:
    # A shutdown hands the job back to resume; taking it for a cancel would lose the job.
    stop = tmp_path / "STOP"
    assert stop_reason(stop) == "shutdown"  # gone before it was read
    stop.write_bytes(b"")
    assert stop_reason(stop) == "shutdown"
    stop.write_bytes(b"\xff\xfe")
    assert stop_reason(stop) == "shutdown"
