"""Publish work by task name. The API never imports worker code; messages carry ids only."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from core.queue import ROUTES, celery_config
from core.settings import get_settings


@lru_cache(maxsize=1)
def _client() -> Celery:
    app = Celery("stillhouse-api")
    app.conf.update(celery_config(get_settings()))
    return app


def publish(task_name: str, *args: str) -> None:
    _client().send_task(task_name, args=list(args), queue=ROUTES[task_name])


def broker_ready() -> tuple[bool, str]:
    try:
        with _client().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:  # the probe reports any failure; it never raises
        return False, f"{type(exc).__name__}: {exc}"
