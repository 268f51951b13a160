"""attempts: when a worker started a delivery, when it was last published, when it looked lost

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("suspected_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_deliveries_status_published_at"),
            ["status", "published_at"],
            unique=False,
        )
    # Deliveries stored before: their last publish is as good as their next attempt time.
    op.execute(
        "UPDATE deliveries SET published_at = coalesce(next_attempt_at, received_at)"
        " WHERE status <> 'processed'"
    )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_status_published_at"))
        batch_op.drop_column("suspected_at")
        batch_op.drop_column("published_at")
        batch_op.drop_column("started_at")
