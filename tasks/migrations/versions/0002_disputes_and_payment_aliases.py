"""disputes and payment aliases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "disputes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("dispute_reference", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_disputes_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
        sa.UniqueConstraint(
            "payment_id", "dispute_reference", name=op.f("uq_disputes_payment_id_dispute_reference")
        ),
    )
    op.create_table(
        "payment_aliases",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_aliases_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("provider", "alias", name=op.f("pk_payment_aliases")),
    )
    with op.batch_alter_table("payment_aliases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_aliases_payment_id"), ["payment_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("payment_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_aliases_payment_id"))

    op.drop_table("payment_aliases")
    op.drop_table("disputes")
