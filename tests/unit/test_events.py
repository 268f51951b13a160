"""Event fingerprints: what an event means, not its bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domain.providers import standard, stripe
from tests.fixture_files import fixture_bytes
from tests.unit.parsing import AMOUNT, encode, standard_body, stripe_event, with_value

# --- fingerprints -------------------------------------------------------------------------


def test_fingerprint_is_equal_for_the_same_meaning_in_other_bytes() -> None:
    compact = standard_body()
    reordered = json.dumps(
        {
            "data": {"currency": "eur", "amount": 1500, "payment_reference": "pay_1", "x": 1},
            "type": "payment.succeeded",
        },
        indent=2,
    ).encode()
    assert compact != reordered
    first = standard.parse("shop", "msg_1", compact)
    second = standard.parse("shop", "msg_1", reordered)
    assert first.fingerprint() == second.fingerprint()


def test_fingerprint_differs_when_the_amount_differs() -> None:
    first = standard.parse("shop", "msg_1", standard_body(amount=1500))
    second = standard.parse("shop", "msg_1", standard_body(amount=1501))
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"payment_reference": "pay_2"},
        {"currency": "USD"},
    ],
    ids=["reference", "currency"],
)
def test_fingerprint_differs_when_the_payment_or_currency_differs(change: dict[str, Any]) -> None:
    first = standard.parse("shop", "msg_1", standard_body())
    second = standard.parse("shop", "msg_1", standard_body(**change))
    assert first.fingerprint() != second.fingerprint()


def test_fingerprint_differs_between_actions_on_the_same_payment() -> None:
    succeeded = standard.parse("shop", "msg_1", standard_body("payment.succeeded"))
    failed = standard.parse("shop", "msg_1", standard_body("payment.failed"))
    assert succeeded.fingerprint() != failed.fingerprint()


def test_stripe_fingerprint_ignores_pending_webhooks() -> None:
    original = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    resent = stripe_event()
    resent["pending_webhooks"] = resent["pending_webhooks"] + 3
    assert stripe.parse(original).fingerprint() == stripe.parse(encode(resent)).fingerprint()


def test_stripe_fingerprint_differs_when_the_amount_received_differs() -> None:
    original = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    changed = with_value(AMOUNT, 1999)
    assert stripe.parse(original).fingerprint() != stripe.parse(changed).fingerprint()


def test_fingerprint_of_a_closed_dispute_depends_on_whether_it_was_won() -> None:
    document = stripe_event("charge.dispute.created.json")
    document["type"] = "charge.dispute.closed"
    document["data"]["object"]["status"] = "won"
    won = stripe.parse(encode(document))
    document["data"]["object"]["status"] = "lost"
    lost = stripe.parse(encode(document))
    assert won.fingerprint() != lost.fingerprint()
