"""Standard Webhooks events in payhook's own schema, parsed."""

from __future__ import annotations

from typing import Any

import pytest

from domain.events import Action, EventKey, MalformedEvent, PaymentEvent
from domain.providers import parse_delivery, standard, stripe
from tests.fixture_files import fixture_bytes
from tests.unit.parsing import encode, standard_body

# --- Standard Webhooks schema -------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "action"),
    [
        ("payment.succeeded", Action.CONFIRM),
        ("payment.failed", Action.FAIL),
        ("payment.canceled", Action.CANCEL),
    ],
)
def test_standard_payment_event_maps_to_its_action(event_type: str, action: Action) -> None:
    parsed = standard.parse("shop", "msg_1", standard_body(event_type))
    assert parsed == PaymentEvent(
        provider="shop",
        event_id="msg_1",
        event_type=event_type,
        action=action,
        payment_reference="pay_1",
        amount=1500,
        currency="EUR",
    )


def test_standard_refund_carries_its_refund_reference() -> None:
    body = standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    parsed = standard.parse("shop", "msg_1", body)
    assert parsed.action is Action.REFUND
    assert parsed.refund_reference == "rf_1"
    assert parsed.amount == 500


@pytest.mark.parametrize("refund_reference", [None, "", 7], ids=["missing", "empty", "number"])
def test_standard_refund_without_a_refund_reference_is_malformed(refund_reference: Any) -> None:
    data = {} if refund_reference is None else {"refund_reference": refund_reference}
    with pytest.raises(MalformedEvent, match="refund_reference"):
        standard.parse("shop", "msg_1", standard_body("payment.refunded", **data))


def test_standard_refund_of_nothing_is_malformed() -> None:
    body = standard_body("payment.refunded", amount=0, refund_reference="rf_1")
    with pytest.raises(MalformedEvent):
        standard.parse("shop", "msg_1", body)


def test_standard_unsupported_type_is_unsupported_without_needing_data() -> None:
    parsed = standard.parse("shop", "msg_1", encode({"type": "payment.disputed"}))
    assert parsed.action is Action.UNSUPPORTED
    assert parsed.provider == "shop"
    assert parsed.event_type == "payment.disputed"
    assert parsed.payment_reference is None


def test_standard_currency_in_lower_case_is_normalized() -> None:
    assert standard.parse("shop", "msg_1", standard_body(currency="eur")).currency == "EUR"


def test_the_standard_source_is_the_provider() -> None:
    parsed = standard.parse("marketplace", "msg_9", standard_body())
    assert parsed.key == EventKey("marketplace", "msg_9")


MALFORMED_STANDARD: dict[str, bytes] = {
    "not-json": b"nope",
    "json-array": b"[1]",
    "missing-type": encode({"data": {}}),
    "missing-data": encode({"type": "payment.succeeded"}),
    "missing-reference": encode(
        {"type": "payment.succeeded", "data": {"amount": 1, "currency": "EUR"}}
    ),
    "amount-as-string": standard_body(amount="1500"),
    "amount-negative": standard_body(amount=-5),
    "amount-as-bool": standard_body(amount=False),
    "missing-amount": encode(
        {"type": "payment.succeeded", "data": {"payment_reference": "p", "currency": "EUR"}}
    ),
    "bad-currency": standard_body(currency="EURO"),
}


@pytest.mark.parametrize("body", MALFORMED_STANDARD.values(), ids=MALFORMED_STANDARD.keys())
def test_malformed_standard_body_raises_malformed_event(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        standard.parse("shop", "msg_1", body)


def test_standard_event_needs_a_webhook_id() -> None:
    with pytest.raises(MalformedEvent, match="webhook-id"):
        standard.parse("shop", "", standard_body())


def test_parse_delivery_routes_stripe_and_standard_sources() -> None:
    stripe_body = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    assert parse_delivery("stripe", "ignored", stripe_body) == stripe.parse(stripe_body)
    assert parse_delivery("shop", "msg_1", standard_body()).provider == "shop"
