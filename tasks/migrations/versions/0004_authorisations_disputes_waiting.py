"""authorisations, dispute money, failed refunds, deliveries waiting on a payment

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

A dispute lost under revision 0003 was booked as a refund named `dispute:<reference>`; it
becomes the dispute's withdrawn money here, and the payment's and order's disputed sums. A
dispute closed under 0003 (only Stripe's charge.dispute.closed closed one) is put at Stripe's
closing stage, so that an older stage delivered late cannot move its money again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("awaiting_payment_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("awaiting_reference", sa.String(length=255), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_deliveries_awaiting_payment_id"), ["awaiting_payment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_provider_awaiting_reference"),
            ["provider", "awaiting_reference"],
            unique=False,
        )
    for table in ("orders", "payments"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("disputed_amount", sa.BigInteger(), nullable=False, server_default="0")
            )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="succeeded")
        )
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("withdrawn", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("stage", sa.Integer(), nullable=False, server_default="0"))
    _move_lost_disputes_out_of_refunds()


def _move_lost_disputes_out_of_refunds() -> None:
    op.execute(
        "UPDATE disputes SET withdrawn = coalesce(("
        "  SELECT r.amount FROM refunds r WHERE r.payment_id = disputes.payment_id"
        "  AND r.refund_reference = 'dispute:' || disputes.dispute_reference), 0)"
    )
    op.execute(
        "UPDATE payments SET disputed_amount = ("
        "  SELECT coalesce(sum(d.withdrawn), 0) FROM disputes d WHERE d.payment_id = payments.id)"
    )
    op.execute(
        "UPDATE payments SET refunded_amount = refunded_amount - disputed_amount,"
        " state = CASE WHEN state = 'refunded' AND refunded_amount - disputed_amount < amount"
        "   THEN 'confirmed' ELSE state END"
    )
    op.execute(
        "UPDATE orders SET"
        " disputed_amount = (SELECT coalesce(sum(p.disputed_amount), 0) FROM payments p"
        "   WHERE p.order_id = orders.id),"
        " refunded_amount = refunded_amount - (SELECT coalesce(sum(p.disputed_amount), 0)"
        "   FROM payments p WHERE p.order_id = orders.id)"
    )
    op.execute("DELETE FROM refunds WHERE refund_reference LIKE 'dispute:%'")
    op.execute("UPDATE disputes SET stage = 4 WHERE status IN ('won', 'lost')")


def downgrade() -> None:
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.drop_column("stage")
        batch_op.drop_column("withdrawn")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("status")
    for table in ("payments", "orders"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("disputed_amount")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_provider_awaiting_reference"))
        batch_op.drop_index(batch_op.f("ix_deliveries_awaiting_payment_id"))
        batch_op.drop_column("awaiting_reference")
        batch_op.drop_column("awaiting_payment_id")
