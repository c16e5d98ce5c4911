"""teachers: the outputs the dry run saw, the one used, its kind and why

Revision ID: 0004_teacher_outputs
Revises: 0003
Create Date: 2026-12-01 15:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_teacher_outputs"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Teachers validated before this revision keep NULLs: a job then lets the dry run decide.
    with op.batch_alter_table("teachers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "outputs", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
        batch_op.add_column(sa.Column("output_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("output_kind", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("output_reason", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("teachers", schema=None) as batch_op:
        batch_op.drop_column("output_reason")
        batch_op.drop_column("output_kind")
        batch_op.drop_column("output_name")
        batch_op.drop_column("outputs")
