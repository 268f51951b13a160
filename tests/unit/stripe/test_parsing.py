"""Stripe events, parsed: every fixture to its action, and the bodies that are malformed."""

from __future__ import annotations

import json

import pytest

from domain.events import Action, EventKey, MalformedEvent, PaymentEvent
from domain.providers import stripe
from tests.fixture_files import fixture_bytes
from tests.unit.parsing import (
    AMOUNT,
    CH,
    CURRENCY,
    DP,
    PI,
    STRIPE_EVENTS,
    STRIPE_EXPECTED,
    encode,
    stripe_event,
    with_value,
)

# --- Stripe: every fixture ----------------------------------------------------------------


def test_every_stripe_event_fixture_has_an_expectation() -> None:
    assert {path.name for path in STRIPE_EVENTS.glob("*.json")} == set(STRIPE_EXPECTED)


@pytest.mark.parametrize("name", sorted(STRIPE_EXPECTED))
def test_stripe_event_fixture_maps_to_its_action(name: str) -> None:
    raw = fixture_bytes(f"stripe/events/{name}")
    document = json.loads(raw)

    parsed = stripe.parse(raw)

    assert parsed == PaymentEvent(
        provider="stripe",
        event_id=document["id"],
        event_type=document["type"],
        **STRIPE_EXPECTED[name],
    )
    assert parsed.key == EventKey("stripe", document["id"])


@pytest.mark.parametrize(
    "name", ["checkout.session.completed.json", "checkout.session.completed.payment_mode.json"]
)
def test_completed_checkout_confirms_through_its_payment_intent_not_the_session(
    name: str,
) -> None:
    document = stripe_event(name)
    parsed = stripe.parse(encode(document))
    assert parsed.payment_reference == document["data"]["object"]["payment_intent"]
    assert parsed.payment_reference != document["data"]["object"]["id"]


def test_checkout_session_not_yet_paid_is_unsupported() -> None:
    document = stripe_event("checkout.session.completed.json")
    document["data"]["object"]["payment_status"] = "unpaid"
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_checkout_session_without_a_payment_intent_is_unsupported() -> None:
    document = stripe_event("checkout.session.completed.json")
    document["data"]["object"]["payment_intent"] = None
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_charge_without_a_payment_intent_confirms_under_its_charge_id() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = None
    parsed = stripe.parse(encode(document))
    assert parsed.action is Action.CONFIRM
    assert parsed.payment_reference == CH


def test_payment_intent_with_latest_charge_teaches_that_charge_as_alias() -> None:
    document = stripe_event()
    document["data"]["object"]["latest_charge"] = "ch_latest"
    assert stripe.parse(encode(document)).alias == "ch_latest"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("succeeded", Action.REFUND),
        ("failed", Action.REFUND_FAILED),
        ("canceled", Action.REFUND_FAILED),
    ],
)
def test_refund_update_maps_its_status(status: str, action: Action) -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["status"] = status
    assert stripe.parse(encode(document)).action is action


@pytest.mark.parametrize("status", ["pending", "requires_action"])
def test_refund_not_yet_settled_is_unsupported(status: str) -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["status"] = status
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_refund_of_a_payment_intent_is_matched_through_it() -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["payment_intent"] = PI
    parsed = stripe.parse(encode(document))
    assert (parsed.payment_reference, parsed.alias) == (PI, CH)


def test_refund_that_names_no_payment_is_malformed() -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["charge"] = None
    with pytest.raises(MalformedEvent):
        stripe.parse(encode(document))


def test_charge_refunded_without_embedded_refunds_is_unsupported() -> None:
    document = stripe_event("charge.refunded.json")
    del document["data"]["object"]["refunds"]
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


@pytest.mark.parametrize(
    ("status", "won"), [("won", True), ("warning_closed", True), ("lost", False)]
)
def test_closed_dispute_says_whether_it_was_won(status: str, won: bool) -> None:
    document = stripe_event("charge.dispute.created.json")
    document["type"] = "charge.dispute.closed"
    document["data"]["object"]["status"] = status
    parsed = stripe.parse(encode(document))
    assert parsed.action is Action.DISPUTE_CLOSED
    assert parsed.dispute_reference == DP
    assert parsed.dispute_won is won


def test_an_expanded_payment_intent_is_matched_by_its_id() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = {"id": "pi_expanded", "object": "x"}
    assert stripe.parse(encode(document)).payment_reference == "pi_expanded"


def test_a_payment_intent_that_is_not_an_id_is_malformed() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = 42
    with pytest.raises(MalformedEvent, match="payment_intent"):
        stripe.parse(encode(document))


def test_stripe_currency_is_stored_in_upper_case() -> None:
    assert stripe.parse(fixture_bytes("stripe/events/payment_intent.succeeded.json")).currency == (
        "USD"
    )


# --- Stripe: malformed bodies -------------------------------------------------------------


def _without(path: tuple[str, ...]) -> bytes:
    document = stripe_event()
    *parents, last = path
    target = document
    for name in parents:
        target = target[name]
    del target[last]
    return encode(document)


MALFORMED_STRIPE: dict[str, bytes] = {
    "not-json": b"{this is not json",
    "not-utf8": b"\xff\xfe{}",
    "empty": b"",
    "json-array": b"[]",
    "json-string": b'"evt_1"',
    "missing-id": _without(("id",)),
    "empty-id": with_value(("id",), ""),
    "id-not-a-string": with_value(("id",), 12),
    "missing-type": _without(("type",)),
    "missing-data": _without(("data",)),
    "data-not-an-object": with_value(("data",), []),
    "missing-data-object": _without(("data", "object")),
    "data-object-null": with_value(("data", "object"), None),
    "missing-intent-id": _without(("data", "object", "id")),
    "missing-amount": _without(AMOUNT),
    "amount-as-string": with_value(AMOUNT, "2000"),
    "amount-negative": with_value(AMOUNT, -1),
    "amount-as-bool": with_value(AMOUNT, True),
    "amount-as-float": with_value(AMOUNT, 20.5),
    "missing-currency": _without(CURRENCY),
    "currency-too-short": with_value(CURRENCY, "us"),
    "currency-not-letters": with_value(CURRENCY, "us1"),
    "currency-not-a-string": with_value(CURRENCY, 840),
}


@pytest.mark.parametrize("body", MALFORMED_STRIPE.values(), ids=MALFORMED_STRIPE.keys())
def test_malformed_stripe_body_raises_malformed_event(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        stripe.parse(body)


def test_malformed_event_message_says_which_field() -> None:
    with pytest.raises(MalformedEvent, match=r"data\.object\.amount_received"):
        stripe.parse(with_value(AMOUNT, "2000"))


def test_unsupported_stripe_event_needs_only_the_envelope() -> None:
    body = encode({"id": "evt_1", "type": "customer.created", "data": {"object": {}}})
    assert stripe.parse(body).action is Action.UNSUPPORTED
