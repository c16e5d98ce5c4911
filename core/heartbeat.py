"""Worker liveness: each worker refreshes a heartbeat where the broker lives, and /readyz
reads them. With Redis, one hash (field: worker name, value: JSON with its queues and the
time); with the embedded filesystem broker, one small file a worker under the broker's
folder. A worker is live when its heartbeat is younger than three heartbeat periods."""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis

from core.settings import Settings

HASH = "stillhouse:workers"
FORGET_AFTER_S = 24 * 3600  # a dead worker's entry is dropped from the hash after a day


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _folder(settings: Settings) -> Path:
    return settings.broker_dir / "workers"


def _hash_key(settings: Settings) -> str:
    return settings.broker_key_prefix + HASH


def beat(settings: Settings, name: str, queues: list[str]) -> None:
    """Record that worker ``name`` (consuming ``queues``) is alive now."""
    entry = json.dumps({"name": name, "queues": sorted(queues), "seen": time.time()})
    if settings.embedded_broker:
        folder = _folder(settings)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(entry)
        tmp.replace(folder / f"{name}.json")
    else:
        _redis(settings.resolved_broker_url).hset(_hash_key(settings), name, entry)


def forget(settings: Settings, name: str) -> None:
    """A worker that stops cleanly takes its heartbeat away."""
    if settings.embedded_broker:
        (_folder(settings) / f"{name}.json").unlink(missing_ok=True)
    else:
        _redis(settings.resolved_broker_url).hdel(_hash_key(settings), name)


def _entries(settings: Settings) -> list[dict[str, Any]]:
    if settings.embedded_broker:
        folder = _folder(settings)
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        out = []
        for path in files:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # removed or half-written meanwhile
        return out
    raw: dict[Any, Any] = _redis(settings.resolved_broker_url).hgetall(_hash_key(settings))
    return [json.loads(value) for value in raw.values()]


def live_workers(settings: Settings) -> list[dict[str, Any]]:
    """Workers seen within three heartbeat periods: name, queues, seconds since seen."""
    now, window = time.time(), 3 * max(1, settings.heartbeat_seconds)
    live, dead = [], []
    for entry in _entries(settings):
        age = now - float(entry.get("seen", 0))
        if age <= window:
            live.append({"name": entry["name"], "queues": entry["queues"], "seen_s": round(age, 1)})
        elif age > FORGET_AFTER_S:
            dead.append(str(entry["name"]))
    for name in dead:
        forget(settings, name)
    return sorted(live, key=lambda e: str(e["name"]))
