"""disputes, payment aliases, replays and redeliveries

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
        "replaced_outcomes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("transition", sa.String(length=64), nullable=True),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "duplicate_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_replaced_outcomes_delivery_id_deliveries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replaced_outcomes")),
    )
    with op.batch_alter_table("replaced_outcomes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_replaced_outcomes_delivery_id"), ["delivery_id"], unique=False
        )

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

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redeliveries", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("replayed_at")
        batch_op.drop_column("redeliveries")

    with op.batch_alter_table("payment_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_aliases_payment_id"))

    op.drop_table("payment_aliases")
    op.drop_table("disputes")
    with op.batch_alter_table("replaced_outcomes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replaced_outcomes_delivery_id"))

    op.drop_table("replaced_outcomes")
