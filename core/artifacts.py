"""A finished job's student files, as its row's ``artifacts`` holds them.

``{format: artifact}`` for the student a client gets by default (a sweep's chosen one), and
for a sweep also ``"candidates": [{format: artifact}, ...]`` by candidate index. The chosen
candidate's entries are the top-level ones themselves (one stored file, two names). An
artifact: ``{"file_id", "key", "sha256", "size_bytes", "filename"}``.
"""

from __future__ import annotations

from typing import Any

CANDIDATES = "candidates"


def student_formats(artifacts: dict[str, Any] | None) -> list[str]:
    return sorted(k for k in artifacts or {} if k != CANDIDATES)


def every_artifact(artifacts: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each stored file once (the chosen candidate's files are listed twice)."""
    found: dict[str, dict[str, Any]] = {}
    artifacts = artifacts or {}
    for by_format in [artifacts, *artifacts.get(CANDIDATES, [])]:
        for fmt, artifact in by_format.items():
            if fmt != CANDIDATES:
                found.setdefault(artifact["key"], artifact)
    return list(found.values())


def student_artifact(
    artifacts: dict[str, Any] | None, fmt: str, candidate: int | None
) -> dict[str, Any] | None:
    """The file of ``fmt`` for ``candidate`` (None: the default student). A job without a
    sweep has one candidate, 0: its student."""
    artifacts = artifacts or {}
    if candidate is None:
        by_format = artifacts
    elif CANDIDATES in artifacts:
        listed = artifacts[CANDIDATES]
        by_format = listed[candidate] if 0 <= candidate < len(listed) else {}
    else:
        by_format = artifacts if candidate == 0 else {}
    found = by_format.get(fmt) if fmt != CANDIDATES else None
    return found if isinstance(found, dict) else None
