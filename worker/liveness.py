"""The worker's heartbeat (core.heartbeat): a thread in the worker's main process refreshes
it every ``heartbeat_seconds`` from the moment the worker is ready, and removes it on a
clean shutdown. /readyz lists the live workers and the queues they consume."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from core import heartbeat
from core.settings import get_settings
from worker.celery_app import app

log = logging.getLogger(__name__)
_stop = threading.Event()
_name: list[str] = []


def _queues() -> list[str]:
    selected = app.amqp.queues.consume_from or app.amqp.queues
    return sorted(str(q) for q in selected)


def _loop(name: str, queues: list[str]) -> None:
    settings = get_settings()
    while True:
        try:
            heartbeat.beat(settings, name, queues)
        except Exception:  # the broker away for a while: try again next period
            log.warning("could not refresh the heartbeat of %s", name, exc_info=True)
        if _stop.wait(max(1, settings.heartbeat_seconds)):
            return


def _start(sender: Any = None, **_: object) -> None:
    name = str(getattr(sender, "hostname", None) or app.conf.get("worker_name") or "worker")
    _name.append(name)
    threading.Thread(target=_loop, args=(name, _queues()), daemon=True, name="heartbeat").start()


def _end(**_: object) -> None:
    _stop.set()
    for name in _name:
        with contextlib.suppress(Exception):
            heartbeat.forget(get_settings(), name)


worker_ready.connect(_start, weak=False)
worker_shutdown.connect(_end, weak=False)
