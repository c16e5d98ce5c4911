"""token teachers: every input of a teacher, its input kind, task and tokenizer; a dataset's kind

Revision ID: 0007_token_teachers
Revises: 0006_upload_leases
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_token_teachers"
down_revision: str | None = "0006_upload_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("teachers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inputs", JSON, nullable=True))
        batch_op.add_column(sa.Column("input_kind", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("task", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("vocab_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokenizer_file_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("tokenizer", JSON, nullable=True))
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("inputs", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("inputs")
        batch_op.drop_column("kind")
    with op.batch_alter_table("teachers", schema=None) as batch_op:
        batch_op.drop_column("tokenizer")
        batch_op.drop_column("tokenizer_file_id")
        batch_op.drop_column("vocab_size")
        batch_op.drop_column("task")
        batch_op.drop_column("input_kind")
        batch_op.drop_column("inputs")
