"""a job's artifacts as {"student": {format: file}, "candidates": [...]} (core.artifacts)

Before: {format: file, ..., "candidates": [...]}, the sweep's list under a key that shared
the namespace of the formats. Data only; the column stays JSON.

Revision ID: 0008_artifacts_shape
Revises: 0007_token_teachers
Create Date: 2026-12-07 16:00:00
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008_artifacts_shape"
down_revision: str | None = "0007_token_teachers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOBS = sa.table("jobs", sa.column("id", sa.String), sa.column("artifacts", sa.JSON))


def _typed(old: dict[str, Any]) -> dict[str, Any]:
    if not old or "student" in old:
        return old
    student = {k: v for k, v in old.items() if k != "candidates"}
    return {"student": student, "candidates": old.get("candidates", [])}


def _flat(new: dict[str, Any]) -> dict[str, Any]:
    if "student" not in new:
        return new
    old = dict(new["student"])
    if new.get("candidates"):
        old["candidates"] = new["candidates"]
    return old


def _rewrite(change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(JOBS.c.id, JOBS.c.artifacts)).all()
    for job_id, stored in rows:
        value = json.loads(stored) if isinstance(stored, str) else stored
        changed = change(value or {})
        if changed != (value or {}):
            conn.execute(JOBS.update().where(JOBS.c.id == job_id).values(artifacts=changed))


def upgrade() -> None:
    _rewrite(_typed)


def downgrade() -> None:
    _rewrite(_flat)
