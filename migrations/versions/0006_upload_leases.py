"""upload leases: the attempt that validates an upload and until when, for the sweep

Revision ID: 0006_upload_leases
Revises: 0005_job_history
Create Date: 2026-12-07 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0006_upload_leases"
down_revision: str | None = "0005_job_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("teachers", "datasets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("attempt", sa.Integer(), server_default="0", nullable=False)
            )
            batch_op.add_column(
                sa.Column("lease_expires_at", models.base.UTCDateTime(timezone=True), nullable=True)
            )
            batch_op.create_index(
                f"ix_{table}_status_lease", ["status", "lease_expires_at"], unique=False
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_status_lease")
            batch_op.drop_column("lease_expires_at")
            batch_op.drop_column("attempt")
