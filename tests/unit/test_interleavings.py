"""Random interleavings of one payment's events, with duplicates, keep every invariant.

Real Stripe payload shapes (tests/fixtures) for confirmations, a failure, a cancellation,
refunds by refund id and disputes, all for one payment, delivered in any order and any number of
times, through the worker's use case on a real (SQLite) database.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from domain.providers import stripe
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage.engine import make_engine
from tasks.storage.tables import deliveries, orders, outcomes, payments, refunds
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json

PI, CHARGE, AMOUNT = "pi_prop", "ch_prop", 1000
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(unmatched_grace=timedelta(minutes=10))
CONFIRMATIONS = {"pending->confirmed", "failed->confirmed", "created->confirmed"}


def _event(fixture: str, **changes: Any) -> dict[str, Any]:
    event = fixture_json(f"stripe/events/{fixture}.json")
    obj = event["data"]["object"]
    for name, value in changes.pop("object", {}).items():
        obj[name] = value
    event.update(changes)
    return event


def _events() -> dict[str, dict[str, Any]]:
    refund = {"charge": CHARGE, "payment_intent": PI, "status": "succeeded", "currency": "usd"}
    dispute = {"charge": CHARGE, "payment_intent": PI, "amount": AMOUNT}
    return {
        "confirm_intent": _event(
            "payment_intent.succeeded",
            object={"id": PI, "amount": AMOUNT, "amount_received": AMOUNT},
        ),
        "confirm_charge": _event(
            "charge.succeeded", object={"id": CHARGE, "payment_intent": PI, "amount": AMOUNT}
        ),
        "fail": _event("payment_intent.payment_failed", object={"id": PI}),
        "cancel": _event("payment_intent.canceled", object={"id": PI}),
        "refund_300": _event(
            "charge.refund.updated", object={**refund, "id": "re_1", "amount": 300}
        ),
        "refund_700": _event(
            "charge.refund.updated", object={**refund, "id": "re_2", "amount": 700}
        ),
        "refund_500": _event(
            "charge.refund.updated", object={**refund, "id": "re_3", "amount": 500}
        ),
        "dispute": _event("charge.dispute.created", object={**dispute, "id": "dp_1"}),
        "dispute_lost": _event(
            "charge.dispute.created",
            type="charge.dispute.closed",
            object={**dispute, "id": "dp_1", "status": "lost"},
        ),
        "dispute_won": _event(
            "charge.dispute.created",
            type="charge.dispute.closed",
            object={**dispute, "id": "dp_2", "status": "won"},
        ),
    }


EVENTS = _events()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interleavings") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_engine(template: Path, folder: Path, n: int) -> Engine:
    path = folder / f"run-{n}.db"
    shutil.copy(template, path)
    engine = make_engine(f"sqlite:///{path}")
    create_order(UnitOfWork(engine), reference="order", total=AMOUNT, currency="USD", now=START)
    create_payment(
        UnitOfWork(engine),
        order_reference="order",
        provider="stripe",
        provider_reference=PI,
        amount=AMOUNT,
        currency="USD",
        now=START,
    )
    return engine


def deliver_all(engine: Engine, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        event = {**EVENTS[name], "id": f"evt_{name}"}
        body = json.dumps(event).encode()
        ids.append(
            store_delivery(
                UnitOfWork(engine), stripe.parse(body), headers="{}", body=body, received_at=START
            )
        )
    return ids


def process_until_settled(engine: Engine, ids: list[int]) -> None:
    """Process in delivery order; retry what waits, as the broker would, past the grace."""
    waiting = ids
    for minutes in (0, 1, 2, 5, 11):  # the last round is past the 10-minute grace period
        now = START + timedelta(minutes=minutes)
        waiting = [
            delivery_id
            for delivery_id in waiting
            if process_delivery(delivery_id, UnitOfWork(engine), now, POLICY).retry_in is not None
        ]
        if not waiting:
            return


_runs = Counter[str]()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(st.sampled_from(sorted(EVENTS)), min_size=1, max_size=14))
def test_any_interleaving_with_duplicates_keeps_every_invariant(
    names: list[str], template: Path, tmp_path: Path
) -> None:
    _runs["examples"] += 1
    engine = fresh_engine(template, tmp_path, _runs["examples"])
    try:
        ids = deliver_all(engine, names)
        process_until_settled(engine, ids)
        with engine.connect() as conn:
            recorded = {row.delivery_id: row for row in conn.execute(select(outcomes))}
            pay = conn.execute(select(payments)).one()
            order = conn.execute(select(orders)).one()
            refund_sum = sum(row.amount for row in conn.execute(select(refunds)))
            event_of = dict(conn.execute(select(deliveries.c.id, deliveries.c.event_id)).all())
    finally:
        engine.dispose()

    # Every delivery has exactly one outcome (the table's unique constraint forbids a second).
    assert sorted(recorded) == sorted(ids)
    # At most one confirmation was ever applied.
    applied = [o for o in recorded.values() if o.kind == "applied"]
    assert sum(o.transition in CONFIRMATIONS for o in applied) <= 1
    # Each event applied or was decided once; its other copies are same_event duplicates.
    for event_id, copies in Counter(event_of.values()).items():
        kinds = [recorded[d].reason for d, e in event_of.items() if e == event_id]
        assert kinds.count("same_event") == copies - 1
    # Refunds never exceed what was captured, and the recorded refunds add up.
    assert 0 <= pay.refunded_amount <= AMOUNT
    assert refund_sum == pay.refunded_amount == order.refunded_amount
    confirmed = pay.state in ("confirmed", "refunded")
    assert order.paid_amount == (AMOUNT if confirmed else 0)
    assert (pay.state == "refunded") == (confirmed and pay.refunded_amount == AMOUNT)
    # The order is paid exactly when its sums say so.
    net = order.paid_amount - order.refunded_amount
    assert (net >= order.total) == (confirmed and pay.refunded_amount == 0)
