"""Drain the task outbox (``models.outbox``): publish what the broker has not taken yet.

Used by each API process (a background loop) and by the worker's periodic sweep, each with
its own ``publish``. An entry leaves the outbox only once the broker accepted its message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from core.db import session_scope
from models import utcnow
from models.outbox import OutboxRepository

log = logging.getLogger(__name__)

Publish = Callable[[str, list[str]], None]
BATCH = 100


def drain(publish: Publish, *, min_age_s: float = 0.0, limit: int = BATCH) -> int:
    """Publish entries older than ``min_age_s`` (younger ones are still being published by
    the request that made them), oldest first. Stops at the first refusal: the broker is
    away and the rest would fail the same way. Returns how many were published."""
    published = 0
    with session_scope() as session:
        outbox = OutboxRepository(session)
        for entry in outbox.due(utcnow() - timedelta(seconds=min_age_s), limit):
            try:
                publish(entry.task, list(entry.args))
            except Exception as exc:  # any broker failure: keep the entry, try again later
                outbox.failed(entry.id, f"{type(exc).__name__}: {exc}")
                log.warning("outbox: the broker refused %s (%s); will retry", entry.task, exc)
                break
            outbox.remove(entry.id)
            published += 1
    if published:
        log.info("outbox: published %d waiting task(s)", published)
    return published
