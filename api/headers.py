"""Request headers read without surprises: a malformed value is ignored or answered with a
4xx, never a 500 (``int()`` raises on non-ASCII digits such as "²" and on more than 4,300
digits; ``str.isdigit`` accepts both)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,19}")


def small_int(raw: str | None) -> int | None:
    """A non-negative decimal of at most 19 ASCII digits, else None."""
    if raw is None or not _DIGITS.fullmatch(raw.strip()):
        return None
    return int(raw.strip())


def last_event_id(raw: str | None) -> int:
    """The SSE ``Last-Event-ID`` (a job revision); -1 when absent or not one of ours."""
    value = small_int(raw)
    return -1 if value is None else value
