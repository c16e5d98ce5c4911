"""API keys: random, shown once, stored as sha256, each with a scope. The rows are made by
``models.keys``."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

KEY_PREFIX = "sh_"


class Scope(StrEnum):
    """What a key may do: ``read`` only GET/HEAD; ``write`` everything but managing keys and
    webhooks; ``admin`` everything."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)
