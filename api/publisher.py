"""Publish work by task name. The API never imports worker code; messages carry ids only.

A route never publishes directly: ``enqueue`` writes an outbox entry in the route's own
transaction and publishes it right after the commit. If the broker is away the request
still succeeds (its row is committed) and the entry waits; ``drain_forever`` (started with
the app) and the worker's sweep publish it once the broker is back (``models.outbox.drain``).
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from celery import Celery
from starlette.concurrency import run_in_threadpool

from core.db import UnitOfWork
from core.queue import ROUTES, celery_config
from core.settings import get_settings
from models.outbox import OutboxRepository, drain

log = logging.getLogger(__name__)

# A request publishes after its commit: with the broker away (or hung) it must answer within
# a few seconds, not wait through kombu's default retries or on a socket that never answers.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
_SOCKET_TIMEOUTS_S = {"socket_connect_timeout": 2, "socket_timeout": 3}


@lru_cache(maxsize=1)
def _client() -> Celery:
    settings = get_settings()
    config = celery_config(settings)
    if not settings.embedded_broker:  # the API only publishes: no long blocking reads here
        config["broker_transport_options"] |= _SOCKET_TIMEOUTS_S
    app = Celery("stillhouse-api")
    app.conf.update(config)
    app.conf.update(broker_connection_timeout=2, task_publish_retry_policy=_PUBLISH_RETRY)
    return app


def publish(task_name: str, *args: str) -> None:
    _client().send_task(task_name, args=list(args), queue=ROUTES[task_name])


def _publish_entry(task_name: str, args: list[str]) -> None:
    publish(task_name, *args)


def enqueue(uow: UnitOfWork, task_name: str, *args: str) -> None:
    """Publish ``task_name(*args)`` once the unit of work commits, at least once."""
    entry_id = OutboxRepository(uow.session).add(task_name, list(args))

    def after_commit() -> None:
        try:
            publish(task_name, *args)
        except Exception as exc:  # the broker is away: the outbox keeps the entry
            log.warning("broker unavailable, %s left in the outbox: %s", task_name, exc)
            return
        try:
            OutboxRepository(uow.session).remove(entry_id)
            uow.session.commit()
        except Exception as exc:  # published, but the entry stays: it is published again
            uow.session.rollback()
            log.warning("outbox entry %s not removed: %s", entry_id, exc)

    uow.after_commit(after_commit)


def drain_once() -> int:
    # Younger entries are still being published by the request that wrote them.
    return drain(_publish_entry, min_age_s=get_settings().outbox_drain_seconds)


async def drain_forever() -> None:
    """Each API process retries what the broker refused, every ``outbox_drain_seconds``."""
    interval = get_settings().outbox_drain_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(drain_once)
        except Exception as exc:  # the database may be away too: try again next round
            log.warning("outbox drain failed: %s", exc)


def broker_ready() -> tuple[bool, str]:
    try:
        with _client().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:  # the probe reports any failure; it never raises
        return False, f"{type(exc).__name__}: {exc}"
