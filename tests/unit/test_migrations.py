"""The migrations build exactly the schema the code uses, and can run twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import text

from tasks.migrate import alembic_config, upgrade
from tasks.storage.engine import make_engine

NOW = datetime(2026, 12, 1, tzinfo=UTC).isoformat()


def test_migrating_twice_is_harmless_and_matches_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)
    # Raises when autogenerate finds any difference between the migrations and tables.py.
    command.check(alembic_config(url))


def test_a_dispute_lost_before_0004_becomes_money_withdrawn_by_the_dispute(tmp_path: Path) -> None:
    """0003 booked a lost dispute as a refund named `dispute:<reference>`; 0004 moves it."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    command.upgrade(alembic_config(url), "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders (id, reference, total, currency, paid_amount,"
                " refunded_amount, created_at) VALUES (1, 'o', 1000, 'USD', 1000, 1000, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO payments (id, order_id, provider, provider_reference, amount,"
                " currency, state, refunded_amount, created_at, updated_at) VALUES"
                " (1, 1, 'stripe', 'pi_1', 1000, 'USD', 'refunded', 1000, :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO refunds (payment_id, refund_reference, amount, created_at) VALUES"
                " (1, 're_1', 400, :t), (1, 'dispute:dp_1', 600, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO disputes (payment_id, dispute_reference, amount, status, opened_at,"
                " updated_at) VALUES (1, 'dp_1', 1000, 'lost', :t, :t)"
            ),
            {"t": NOW},
        )
    upgrade(url)
    with engine.connect() as conn:
        payment = conn.execute(text("SELECT * FROM payments")).one()
        order = conn.execute(text("SELECT * FROM orders")).one()
        dispute = conn.execute(text("SELECT * FROM disputes")).one()
        refunds = conn.execute(text("SELECT refund_reference, status FROM refunds")).all()
    engine.dispose()
    assert (payment.state, payment.refunded_amount, payment.disputed_amount) == (
        "confirmed",
        400,
        600,
    )
    assert (order.refunded_amount, order.disputed_amount) == (400, 600)
    assert (dispute.withdrawn, dispute.status, dispute.stage) == (600, "lost", 4)
    assert refunds == [("re_1", "succeeded")]
