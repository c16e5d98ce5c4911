"""Log lines of the API and the workers: text by default, one JSON object a line with
``STILLHOUSE_LOG_FORMAT=json``, carrying the job and tenant ids of the work in progress.

The ids live in context variables (``log_context``): a request sets the tenant once its key
is known, a worker sets the job and its tenant for the length of a task. A filter copies
them onto every record, so any formatter can use them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("job_id", "tenant_id")
_context: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"stillhouse_{name}", default=None) for name in CONTEXT_FIELDS
}

# Loggers whose handlers get the JSON formatter besides the root's (uvicorn adds its own).
OWN_HANDLER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery.task")


def set_log_context(**ids: str | None) -> None:
    """Set ids for the rest of the current context (a request's task, a worker's task)."""
    for name, value in ids.items():
        _context[name].set(value)


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Ids for the log lines written inside the block."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Copies the context's ids onto each record (never overwriting ids given in ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids when known, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName if record.processName != "MainProcess" else None,
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or _context[name].get()
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in line.items() if v is not None}, default=str)


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    return list(logger.handlers)


def configure_logging(log_format: str, logger: logging.Logger | None = None) -> None:
    """Add the id filter to the handlers of ``logger`` (the root by default) and of the
    servers' own loggers; with ``json``, give them the JSON formatter too. Idempotent."""
    root = logger or logging.getLogger()
    if not root.handlers and log_format == "json":
        root.addHandler(logging.StreamHandler())
        if root.level in (logging.NOTSET, logging.WARNING):
            root.setLevel(logging.INFO)
    handlers = _handlers(root)
    for name in OWN_HANDLER_LOGGERS:
        handlers += _handlers(logging.getLogger(name))
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


class QuietSweep(logging.Filter):
    """Drops the routine lines of periodic tasks (beat sending one, the worker receiving it
    and its success), which would otherwise appear every few seconds forever. The tasks log
    what they find themselves."""

    def __init__(self, task_names: frozenset[str]) -> None:
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict):
            return args.get("name") not in self.task_names
        if isinstance(args, tuple):
            return not self.task_names.intersection(a for a in args if isinstance(a, str))
        return True


def quiet_sweep(*task_names: str) -> None:
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietSweep) for f in logger.filters):
            logger.addFilter(QuietSweep(frozenset(task_names)))
