"""Prometheus in multiprocess mode: every API and worker process of a data dir writes its
counters and histograms to files under ``<data dir>/metrics``, and ``GET /metrics`` sums them.

prometheus-client picks its value store when a metric is made, from
``PROMETHEUS_MULTIPROC_DIR``: this module sets it (unless the operator did) before any
metric of ours exists. Files are named by host and pid, so containers sharing the data
volume (each with its own pid 1) never write the same file.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from prometheus_client import values

from core.settings import Settings

ENV = "PROMETHEUS_MULTIPROC_DIR"


def _identifier() -> str:
    # prometheus-client splits file names on "_": keep it out of the host part.
    return f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"


_enabled: list[Path] = []


def enable_multiprocess(settings: Settings) -> Path:
    """Point this process's metrics at the shared folder; returns it. Idempotent; call it
    before making any metric (a metric made before keeps its in-process store)."""
    if not _enabled:
        folder = Path(os.environ.setdefault(ENV, str(settings.metrics_dir)))
        folder.mkdir(parents=True, exist_ok=True)
        values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
            process_identifier=_identifier
        )
        _enabled.append(folder)
    return _enabled[0]


def reset_multiprocess(settings: Settings) -> None:
    """At a fresh start of the whole service (``stillhouse run``): drop the last run's files."""
    folder = Path(os.environ.get(ENV) or settings.metrics_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
