"""Random interleavings of one payment's events, with duplicates: every invariant holds, and
the books end the same whatever order the events arrive in.

Real provider payload shapes (tests/fixtures) for authorisations, captures, failures,
cancellations, refunds (and their failures) and disputes (and their reversals), all for one
payment, through the worker's use case on a real (SQLite) database. Deliveries are processed
as the worker would see them: in the order they arrived, then each delivery that a state
change woke (published after that change's commit), with no beat and no clock in between.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from domain.events import PaymentEvent
from domain.providers import DEFAULT_READING, Reading, adyen, stripe
from domain.providers.adyen import CaptureMode
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage.engine import make_engine
from tasks.storage.tables import deliveries, orders, outcomes, payments, refunds
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json

PI, CHARGE, AMOUNT = "pi_prop", "ch_prop", 1000
ADYEN_REFERENCE = "order-prop"
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(unmatched_grace=timedelta(minutes=10))
CONFIRMATIONS = {
    "pending->confirmed",
    "failed->confirmed",
    "created->confirmed",
    "authorized->confirmed",
}


def _stripe(fixture: str, **changes: Any) -> dict[str, Any]:
    event = fixture_json(f"stripe/events/{fixture}.json")
    obj = event["data"]["object"]
    for name, value in changes.pop("object", {}).items():
        obj[name] = value
    event.update(changes)
    return event


def _adyen(fixture: str, **changes: Any) -> dict[str, Any]:
    request = fixture_json(f"adyen/notifications/{fixture}.json")
    item: dict[str, Any] = request["notificationItems"][0]["NotificationRequestItem"]
    item.update(merchantReference=ADYEN_REFERENCE, **changes)
    item["amount"] = {"currency": "EUR", "value": AMOUNT}
    return item


def _stripe_events() -> dict[str, dict[str, Any]]:
    refund = {"charge": CHARGE, "payment_intent": PI, "currency": "usd"}
    dispute = {"charge": CHARGE, "payment_intent": PI, "amount": AMOUNT, "id": "dp_1"}
    return {
        "hold": _stripe(
            "payment_intent.amount_capturable_updated",
            object={"id": PI, "amount": AMOUNT, "amount_capturable": AMOUNT},
        ),
        "hold_charge": _stripe(
            "charge.succeeded",
            object={"id": CHARGE, "payment_intent": PI, "amount": AMOUNT, "captured": False},
        ),
        "confirm_intent": _stripe(
            "payment_intent.succeeded",
            object={"id": PI, "amount": AMOUNT, "amount_received": AMOUNT},
        ),
        "confirm_charge": _stripe(
            "charge.succeeded", object={"id": CHARGE, "payment_intent": PI, "amount": AMOUNT}
        ),
        "captured": _stripe(
            "charge.captured",
            object={
                "id": CHARGE,
                "payment_intent": PI,
                "amount": AMOUNT,
                "amount_captured": AMOUNT,
            },
        ),
        "fail": _stripe("payment_intent.payment_failed", object={"id": PI}),
        "cancel": _stripe("payment_intent.canceled", object={"id": PI}),
        "refund_300": _stripe(
            "charge.refund.updated",
            object={**refund, "id": "re_1", "amount": 300, "status": "succeeded"},
        ),
        "refund_300_failed": _stripe(
            "charge.refund.updated",
            object={**refund, "id": "re_1", "amount": 300, "status": "failed"},
        ),
        "refund_700": _stripe(
            "charge.refund.updated",
            object={**refund, "id": "re_2", "amount": 700, "status": "succeeded"},
        ),
        "refund_500": _stripe(
            "charge.refund.updated",
            object={**refund, "id": "re_3", "amount": 500, "status": "succeeded"},
        ),
        "dispute": _stripe("charge.dispute.created", object=dispute),
        "dispute_withdrawn": _stripe("charge.dispute.funds_withdrawn", object=dispute),
        "dispute_reinstated": _stripe("charge.dispute.funds_reinstated", object=dispute),
        "dispute_lost": _stripe("charge.dispute.closed", object={**dispute, "status": "lost"}),
        "dispute_won": _stripe("charge.dispute.closed", object={**dispute, "status": "won"}),
    }


def _adyen_events() -> dict[str, dict[str, Any]]:
    dispute = {"pspReference": "PSP_DISPUTE"}
    return {
        "adyen_authorised": _adyen("authorisation-true", pspReference="PSP_PAYMENT"),
        "adyen_captured": _adyen("capture-true", pspReference="PSP_CAPTURE"),
        "adyen_capture_failed": _adyen("capture-false", pspReference="PSP_CAPTURE"),
        "adyen_notified": _adyen("notification-of-chargeback", **dispute),
        "adyen_chargeback": _adyen("chargeback", **dispute),
        "adyen_reversed": _adyen("chargeback-reversed", **dispute),
        "adyen_second": _adyen("second-chargeback", **dispute),
    }


STRIPE_EVENTS = _stripe_events()
ADYEN_EVENTS = _adyen_events()
MANUAL = Reading(adyen_capture=CaptureMode.MANUAL)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interleavings") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


_runs = Counter[str]()


def fresh_engine(template: Path, folder: Path, provider: str = "stripe") -> Engine:
    _runs["engines"] += 1
    path = folder / f"run-{_runs['engines']}.db"
    shutil.copy(template, path)
    engine = make_engine(f"sqlite:///{path}")
    currency = "USD" if provider == "stripe" else "EUR"
    create_order(UnitOfWork(engine), reference="order", total=AMOUNT, currency=currency, now=START)
    create_payment(
        UnitOfWork(engine),
        order_reference="order",
        provider=provider,
        provider_reference=PI if provider == "stripe" else ADYEN_REFERENCE,
        amount=AMOUNT,
        currency=currency,
        now=START,
    )
    return engine


def deliver_all(engine: Engine, names: list[str]) -> list[int]:
    """Store each named event as the receiver would; a repeated name is the same event."""
    ids = []
    for name in names:
        parse: Callable[[bytes], PaymentEvent]
        if name in ADYEN_EVENTS:
            body = json.dumps(ADYEN_EVENTS[name]).encode()
            parse = adyen.parse_item
        else:
            body = json.dumps({**STRIPE_EVENTS[name], "id": f"evt_{name}"}).encode()
            parse = stripe.parse
        ids.append(
            store_delivery(
                UnitOfWork(engine), parse(body), headers="{}", body=body, received_at=START
            )
        )
    return ids


def process_as_published(
    engine: Engine, ids: list[int], reading: Reading = DEFAULT_READING
) -> list[int]:
    """Process in delivery order, then whatever each change woke; returns what still waits."""
    queue, waiting = list(ids), set[int]()
    while queue:
        delivery_id = queue.pop(0)
        processed = process_delivery(delivery_id, UnitOfWork(engine), START, POLICY, reading)
        if processed.retry_in is not None:
            waiting.add(delivery_id)
        else:
            waiting.discard(delivery_id)
            queue.extend(processed.woken)
    return sorted(waiting)


@dataclass(frozen=True)
class Books:
    """What a user checks at the end: the payment's state and every sum."""

    state: str
    paid: int
    refunded: int
    disputed: int
    order_status: str


def books(engine: Engine) -> Books:
    with engine.connect() as conn:
        pay = conn.execute(select(payments)).one()
        order = conn.execute(select(orders)).one()
    assert pay.refunded_amount == order.refunded_amount
    assert pay.disputed_amount == order.disputed_amount
    net = order.paid_amount - order.refunded_amount - order.disputed_amount
    return Books(
        pay.state,
        order.paid_amount,
        order.refunded_amount,
        order.disputed_amount,
        "paid" if net >= order.total else "pending",
    )


# A story is the set of events a provider sends for one thing that happened to a payment, and
# the books it must leave, whatever order the events arrive in.
STORIES: dict[str, tuple[list[str], Reading, Books]] = {
    "held then captured": (
        ["hold", "hold_charge", "confirm_intent", "captured"],
        DEFAULT_READING,
        Books("confirmed", AMOUNT, 0, 0, "paid"),
    ),
    "held then voided": (
        ["hold", "hold_charge", "cancel"],
        DEFAULT_READING,
        Books("canceled", 0, 0, 0, "pending"),
    ),
    "a refund that failed, and one that did not": (
        ["confirm_intent", "refund_300", "refund_300_failed", "refund_700"],
        DEFAULT_READING,
        Books("confirmed", AMOUNT, 700, 0, "pending"),
    ),
    "a dispute won: the money taken and given back": (
        ["confirm_intent", "dispute", "dispute_withdrawn", "dispute_reinstated", "dispute_won"],
        DEFAULT_READING,
        Books("confirmed", AMOUNT, 0, 0, "paid"),
    ),
    "a dispute lost": (
        ["confirm_charge", "dispute", "dispute_withdrawn", "dispute_lost"],
        DEFAULT_READING,
        Books("confirmed", AMOUNT, 0, AMOUNT, "pending"),
    ),
    "Adyen, manual capture: captured, charged back, reversed": (
        [
            "adyen_authorised",
            "adyen_captured",
            "adyen_notified",
            "adyen_chargeback",
            "adyen_reversed",
        ],
        MANUAL,
        Books("confirmed", AMOUNT, 0, 0, "paid"),
    ),
    "Adyen, manual capture: a chargeback, reversed, then charged back again": (
        [
            "adyen_authorised",
            "adyen_captured",
            "adyen_chargeback",
            "adyen_reversed",
            "adyen_second",
        ],
        MANUAL,
        Books("confirmed", AMOUNT, 0, AMOUNT, "pending"),
    ),
    "Adyen, manual capture: the capture failed": (
        ["adyen_authorised", "adyen_capture_failed"],
        MANUAL,
        Books("failed", 0, 0, 0, "pending"),
    ),
}


@st.composite
def deliveries_of(draw: st.DrawFn, story: list[str]) -> list[str]:
    """Every event of the story, some of them delivered twice, in any order."""
    again = draw(st.lists(st.sampled_from(story), max_size=3))
    order: list[str] = draw(st.permutations([*story, *again]))
    return order


@pytest.mark.parametrize("story", sorted(STORIES))
def test_in_delivery_order_each_story_leaves_the_books_it_should(
    story: str, template: Path, tmp_path: Path
) -> None:
    names, reading, expected = STORIES[story]
    provider = "adyen" if names[0].startswith("adyen") else "stripe"
    engine = fresh_engine(template, tmp_path, provider)
    try:
        assert process_as_published(engine, deliver_all(engine, names), reading) == []
        assert books(engine) == expected
    finally:
        engine.dispose()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize("story", sorted(STORIES))
def test_every_order_of_delivery_leaves_the_same_books(
    story: str, data: st.DataObject, template: Path, tmp_path: Path
) -> None:
    names, reading, expected = STORIES[story]
    order = data.draw(deliveries_of(names), label="delivered")
    provider = "adyen" if names[0].startswith("adyen") else "stripe"
    engine = fresh_engine(template, tmp_path, provider)
    try:
        ids = deliver_all(engine, order)
        # Nothing is left waiting: each state change woke what waited for it.
        assert process_as_published(engine, ids, reading) == []
        assert books(engine) == expected
        with engine.connect() as conn:
            kinds = [row.kind for row in conn.execute(select(outcomes))]
    finally:
        engine.dispose()
    assert len(kinds) == len(ids)
    assert "unmatched" not in kinds and "rejected" not in kinds


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(st.sampled_from(sorted(STRIPE_EVENTS)), min_size=1, max_size=14))
def test_any_interleaving_with_duplicates_keeps_every_invariant(
    names: list[str], template: Path, tmp_path: Path
) -> None:
    engine = fresh_engine(template, tmp_path)
    try:
        ids = deliver_all(engine, names)
        waiting = process_as_published(engine, ids)
        # What still waits (a refund of a payment never captured) expires into unmatched.
        later = START + POLICY.await_state
        for delivery_id in waiting:
            process_delivery(delivery_id, UnitOfWork(engine), later, POLICY)
        with engine.connect() as conn:
            recorded = {row.delivery_id: row for row in conn.execute(select(outcomes))}
            pay = conn.execute(select(payments)).one()
            order = conn.execute(select(orders)).one()
            refund_sum = sum(
                row.amount
                for row in conn.execute(select(refunds).where(refunds.c.status == "succeeded"))
            )
            event_of = dict(conn.execute(select(deliveries.c.id, deliveries.c.event_id)).all())
    finally:
        engine.dispose()

    # Every delivery has exactly one outcome (the table's unique constraint forbids a second).
    assert sorted(recorded) == sorted(ids)
    # At most one confirmation was ever applied.
    applied = [o for o in recorded.values() if o.kind == "applied"]
    assert sum(o.transition in CONFIRMATIONS for o in applied) <= 1
    # Each event was decided once and its other copies are same_event duplicates; a copy that
    # ended unmatched gave its claim back, so each copy of an event never matched is unmatched.
    for event_id in set(event_of.values()):
        copies = [recorded[d] for d, e in event_of.items() if e == event_id]
        decided = [o for o in copies if o.kind != "unmatched"]
        assert [o.reason for o in decided].count("same_event") == max(0, len(decided) - 1)
    # Refunds and disputes never take more than was captured, and the recorded ones add up.
    assert 0 <= pay.refunded_amount + pay.disputed_amount <= AMOUNT
    assert refund_sum == pay.refunded_amount == order.refunded_amount
    assert pay.disputed_amount == order.disputed_amount
    captured = pay.state in ("confirmed", "refunded")
    assert order.paid_amount == (AMOUNT if captured else 0)
    assert (pay.state == "refunded") == (captured and pay.refunded_amount == AMOUNT)
    # The order is paid exactly when its sums say so.
    net = order.paid_amount - order.refunded_amount - order.disputed_amount
    assert (net >= order.total) == (captured and pay.refunded_amount + pay.disputed_amount == 0)
