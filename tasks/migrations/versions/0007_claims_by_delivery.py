"""claims by delivery: an index on idempotency_keys.first_delivery_id

Giving back a delivery's claims (a deferral, an unmatched or dead outcome) finds them by the
delivery; without this index every deferral read the whole table of claims.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_idempotency_keys_first_delivery_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Built without blocking the workers' claims meanwhile (outside a transaction).
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX,
                "idempotency_keys",
                ["first_delivery_id"],
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    else:
        op.create_index(INDEX, "idempotency_keys", ["first_delivery_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="idempotency_keys")
