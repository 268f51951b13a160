"""Every Stripe fixture, signed as Stripe signs, through the receiver and the worker's use case.

Each story registers the payment the fixture names, sends the real payload (only its event id
made unique), processes the stored delivery, and checks the outcome and the payment's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tests.fixture_files import fixture_json
from tests.unit.webapp import NOW, Harness, harness_for, make_settings

PI = "pi_000000000000000000000000"
CHARGE = "ch_000000000000000000000000"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = harness_for(make_settings(tmp_path), monkeypatch)
    yield harness
    harness.runtime.engine.dispose()


def register(app: Harness, reference: str, amount: int) -> int:
    order = f"order-{reference}-{amount}"
    app.api("POST", "/api/orders", json={"reference": order, "total": amount, "currency": "usd"})
    answer = app.api(
        "POST",
        "/api/payments",
        json={
            "order_reference": order,
            "provider": "stripe",
            "provider_reference": reference,
            "amount": amount,
            "currency": "usd",
        },
    )
    assert answer.status_code == 201, answer.text
    payment_id: int = answer.json()["id"]
    return payment_id


def deliver(app: Harness, fixture: str, event_id: str) -> dict[str, Any]:
    """Send the fixture through the receiver, process what was stored, return the outcome."""
    event = fixture_json(f"stripe/events/{fixture}.json")
    event["id"] = event_id
    answer = app.stripe(json.dumps(event).encode())
    assert answer.status_code == 202, answer.text
    delivery_id = answer.json()["delivery_id"]
    assert app.published[-1] == delivery_id
    process_delivery(delivery_id, app.runtime.unit_of_work(), NOW, RetryPolicy())
    outcome: dict[str, Any] = app.api("GET", f"/api/deliveries/{delivery_id}").json()["outcome"]
    return {**outcome, "delivery_id": delivery_id}


def payment(app: Harness, payment_id: int) -> dict[str, Any]:
    view: dict[str, Any] = app.api("GET", f"/api/payments/{payment_id}").json()
    return view


def order_status(app: Harness, reference: str, amount: int) -> str:
    status: str = app.api("GET", f"/api/orders/order-{reference}-{amount}").json()["status"]
    return status


@pytest.mark.parametrize(
    ("fixture", "reference", "amount"),
    [
        ("payment_intent.succeeded", PI, 2000),
        ("charge.succeeded", PI, 2000),
        ("checkout.session.completed", PI, 3000),
        ("checkout.session.completed.payment_mode", "pi_00000000000000", 25000),
    ],
)
def test_a_confirmation_confirms_the_payment_and_pays_the_order(
    app: Harness, fixture: str, reference: str, amount: int
) -> None:
    payment_id = register(app, reference, amount)

    first = deliver(app, fixture, "evt_story_1")
    again = deliver(app, fixture, "evt_story_1")

    assert (first["kind"], first["transition"]) == ("applied", "pending->confirmed")
    assert (again["kind"], again["reason"], again["duplicate_of"]) == (
        "acknowledged_duplicate",
        "same_event",
        first["delivery_id"],
    )
    assert payment(app, payment_id)["state"] == "confirmed"
    assert order_status(app, reference, amount) == "paid"


def test_a_checkout_for_another_amount_is_rejected_and_changes_nothing(app: Harness) -> None:
    payment_id = register(app, PI, 2000)

    outcome = deliver(app, "checkout.session.completed", "evt_story_mismatch")

    assert (outcome["kind"], outcome["reason"]) == ("rejected", "amount_mismatch")
    assert payment(app, payment_id)["state"] == "pending"
    assert order_status(app, PI, 2000) == "pending"


@pytest.mark.parametrize(
    ("fixture", "state"),
    [("payment_intent.payment_failed", "failed"), ("payment_intent.canceled", "canceled")],
)
def test_a_failure_or_cancellation_closes_a_pending_payment(
    app: Harness, fixture: str, state: str
) -> None:
    payment_id = register(app, PI, 2000)

    outcome = deliver(app, fixture, "evt_story_close")

    assert (outcome["kind"], outcome["transition"]) == ("applied", f"pending->{state}")
    assert payment(app, payment_id)["state"] == state


@pytest.mark.parametrize("fixture", ["payment_intent.payment_failed", "payment_intent.canceled"])
def test_a_failure_or_cancellation_after_the_confirmation_is_stale(
    app: Harness, fixture: str
) -> None:
    payment_id = register(app, PI, 2000)
    deliver(app, "payment_intent.succeeded", "evt_story_confirm")

    outcome = deliver(app, fixture, "evt_story_late")

    assert (outcome["kind"], outcome["reason"]) == ("ignored", "stale")
    assert payment(app, payment_id)["state"] == "confirmed"


def test_events_payhook_does_not_act_on_are_ignored(app: Harness) -> None:
    payment_id = register(app, PI, 2000)

    outcome = deliver(app, "charge.failed", "evt_story_other")

    assert (outcome["kind"], outcome["reason"]) == ("ignored", "unsupported_event")
    assert payment(app, payment_id)["state"] == "pending"


def test_under_manual_capture_the_hold_pays_nothing_and_the_capture_pays(app: Harness) -> None:
    payment_id = register(app, PI, 2000)

    held = deliver(app, "payment_intent.amount_capturable_updated", "evt_story_hold")
    assert (held["kind"], held["transition"]) == ("applied", "pending->authorized")
    assert order_status(app, PI, 2000) == "pending"

    # charge.succeeded with captured: false is the same hold, seen from the charge.
    uncaptured = fixture_json("stripe/events/charge.succeeded.json")
    uncaptured["id"] = "evt_story_uncaptured"
    uncaptured["data"]["object"]["captured"] = False
    answer = app.stripe(json.dumps(uncaptured).encode())
    process_delivery(answer.json()["delivery_id"], app.runtime.unit_of_work(), NOW, RetryPolicy())
    assert payment(app, payment_id)["state"] == "authorized"

    captured = deliver(app, "payment_intent.succeeded", "evt_story_capture")
    assert (captured["kind"], captured["transition"]) == ("applied", "authorized->confirmed")
    assert order_status(app, PI, 2000) == "paid"


def test_a_hold_canceled_before_its_capture_leaves_the_order_unpaid(app: Harness) -> None:
    payment_id = register(app, PI, 2000)
    deliver(app, "payment_intent.amount_capturable_updated", "evt_story_hold")

    canceled = deliver(app, "payment_intent.canceled", "evt_story_void")

    assert (canceled["kind"], canceled["transition"]) == ("applied", "authorized->canceled")
    assert order_status(app, PI, 2000) == "pending"
    assert payment(app, payment_id)["state"] == "canceled"


def test_charge_captured_confirms_an_authorized_charge(app: Harness) -> None:
    # The fixture's charge (100 cents) was made without a PaymentIntent.
    payment_id = register(app, CHARGE, 100)

    outcome = deliver(app, "charge.captured", "evt_story_captured")

    assert (outcome["kind"], outcome["transition"]) == ("applied", "pending->confirmed")
    assert order_status(app, CHARGE, 100) == "paid"
    assert payment(app, payment_id)["state"] == "confirmed"


def confirmed_charge(app: Harness) -> int:
    """The refund and dispute fixtures name a 100-cent charge made without a PaymentIntent."""
    payment_id = register(app, CHARGE, 100)
    assert app.api("POST", f"/api/payments/{payment_id}/confirm").status_code == 200
    return payment_id


def test_a_full_refund_refunds_the_payment_once_by_refund_id(app: Harness) -> None:
    payment_id = confirmed_charge(app)

    refunded = deliver(app, "charge.refunded", "evt_story_refunded")
    updated = deliver(app, "charge.refund.updated", "evt_story_refund_updated")

    assert (refunded["kind"], refunded["transition"]) == ("applied", "confirmed->refunded")
    assert (updated["kind"], updated["reason"]) == ("acknowledged_duplicate", "already_in_state")
    view = payment(app, payment_id)
    assert (view["state"], view["refunded_amount"]) == ("refunded", 100)
    assert order_status(app, CHARGE, 100) == "pending"  # nothing paid any more


def test_a_refund_update_alone_refunds_the_payment(app: Harness) -> None:
    payment_id = confirmed_charge(app)

    outcome = deliver(app, "charge.refund.updated", "evt_story_refund_only")

    assert (outcome["kind"], outcome["transition"]) == ("applied", "confirmed->refunded")
    assert payment(app, payment_id)["refunded_amount"] == 100


def test_a_dispute_is_recorded_against_the_confirmed_payment(app: Harness) -> None:
    payment_id = confirmed_charge(app)

    outcome = deliver(app, "charge.dispute.created", "evt_story_dispute")

    assert (outcome["kind"], outcome["transition"]) == ("applied", "dispute:opened")
    assert payment(app, payment_id)["state"] == "confirmed"
    assert order_status(app, CHARGE, 100) == "paid"  # opened: no money moved yet


OLD_CHARGE = "ch_00000000000000"  # the charge of the older dispute fixtures (1000 cents)


def test_a_dispute_takes_the_money_and_winning_it_brings_it_back(app: Harness) -> None:
    payment_id = register(app, OLD_CHARGE, 1000)
    assert app.api("POST", f"/api/payments/{payment_id}/confirm").status_code == 200
    withdrawn = fixture_json("stripe/events/charge.dispute.funds_withdrawn.json")
    withdrawn["data"]["object"].update(id="dp_00000000000000", charge=OLD_CHARGE)
    withdrawn["id"] = "evt_story_withdrawn"
    answer = app.stripe(json.dumps(withdrawn).encode())
    delivery_id = answer.json()["delivery_id"]
    process_delivery(delivery_id, app.runtime.unit_of_work(), NOW, RetryPolicy())

    assert payment(app, payment_id)["disputed_amount"] == 1000
    assert order_status(app, OLD_CHARGE, 1000) == "pending"

    reinstated = deliver(app, "charge.dispute.funds_reinstated", "evt_story_reinstated")
    assert (reinstated["kind"], reinstated["transition"]) == (
        "applied",
        "dispute:funds_reinstated",
    )
    assert order_status(app, OLD_CHARGE, 1000) == "paid"
    closed = deliver(app, "charge.dispute.closed", "evt_story_closed")
    assert (closed["kind"], closed["transition"]) == ("applied", "dispute:won")
    assert payment(app, payment_id)["disputed_amount"] == 0


def test_a_refund_before_its_confirmation_waits_instead_of_failing(app: Harness) -> None:
    payment_id = register(app, CHARGE, 100)
    event = fixture_json("stripe/events/charge.refunded.json")
    event["id"] = "evt_story_early_refund"
    delivery_id = app.stripe(json.dumps(event).encode()).json()["delivery_id"]

    waiting = process_delivery(delivery_id, app.runtime.unit_of_work(), NOW, RetryPolicy())

    assert waiting.outcome.is_deferred and waiting.retry_in is not None
    view = app.api("GET", f"/api/deliveries/{delivery_id}").json()
    assert (view["status"], view["outcome"]) == ("deferred", None)
    assert payment(app, payment_id)["state"] == "pending"

    # The confirmation (here by hand) wakes it: published at once, then applied.
    assert app.api("POST", f"/api/payments/{payment_id}/confirm").status_code == 200
    assert app.published[-1] == delivery_id
    applied = process_delivery(delivery_id, app.runtime.unit_of_work(), NOW, RetryPolicy())
    assert applied.outcome.transition == "confirmed->refunded"
