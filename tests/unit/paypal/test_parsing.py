"""PayPal events, parsed: every sample to its payment change; amounts in exact minor units."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.providers import parse_delivery, paypal
from tests.fixture_files import FIXTURES, fixture_bytes, fixture_json
from tests.unit.paypal.support import RELATED, body_of

# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    action: Action
    reference: str
    amount: int
    currency: str
    alias: str | None = None
    refund: str | None = None
    dispute: str | None = None
    stage: int | None = None
    won: bool | None = None


EXPECTED = {
    "PAYMENT.CAPTURE.COMPLETED.v2.json": Expected(Action.CONFIRM, "27M47624FP291604U", 251, "USD"),
    "PAYMENT.CAPTURE.DENIED.v2.json": Expected(Action.FAIL, "7NW873794T343360M", 251, "AUD"),
    "PAYMENT.CAPTURE.REFUNDED.v2.json": Expected(
        Action.REFUND, "0JF852973C016714D", 99, "USD", refund="1Y107995YT783435V"
    ),
    "CHECKOUT.ORDER.COMPLETED.v2.json": Expected(
        Action.CONFIRM, "5O190127TN364715T", 10000, "USD", alias="3C679366HH908993F"
    ),
    "PAYMENT.CAPTURE.COMPLETED.v1.json": Expected(
        Action.CONFIRM, "PAY-3YE025760C441402AKTRY2PQ", 747, "USD", alias="42311647XV020574X"
    ),
    "PAYMENT.CAPTURE.DENIED.v1.json": Expected(
        Action.FAIL, "PAY-6AG64245W53716013KYKUWNI", 50, "EUR", alias="1YH34677BD7819356"
    ),
    "PAYMENT.CAPTURE.REFUNDED.v1.json": Expected(
        Action.REFUND,
        "PAY-7PD36489JY0066936KREEERQ",
        15,
        "USD",
        alias="5LK72275CG489890D",
        refund="8VC964970N548345V",
    ),
    # Money held, not captured; a voided hold pays nothing.
    "PAYMENT.AUTHORIZATION.CREATED.v1.json": Expected(
        Action.AUTHORIZE, "PAY-36246664YD343335CKHFA4AY", 747, "USD"
    ),
    "PAYMENT.AUTHORIZATION.VOIDED.v2.json": Expected(
        Action.CANCEL, "5O190127TN364715T", 10000, "USD"
    ),
    # A dispute names the capture it disputes (learned as the order's alias).
    "CUSTOMER.DISPUTE.CREATED.json": Expected(
        Action.DISPUTE, "3C679366HH908993F", 10000, "USD", dispute="PP-D-27803", stage=1
    ),
    "CUSTOMER.DISPUTE.RESOLVED.json": Expected(
        Action.DISPUTE_CLOSED,
        "3C679366HH908993F",
        10000,  # dispute_outcome.amount_refunded
        "USD",
        dispute="PP-D-27803",
        stage=2,
        won=False,
    ),
}


def test_every_sample_event_has_an_expectation() -> None:
    assert set(EXPECTED) | {"verify_webhook_signature_request.example.json"} == set(
        path.name for path in (FIXTURES / "paypal").glob("*.json")
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_event_parses_to_its_payment_change(name: str) -> None:
    document = fixture_json(f"paypal/{name}")
    event = paypal.parse(fixture_bytes(f"paypal/{name}"))
    want = EXPECTED[name]
    assert event == PaymentEvent(
        provider="paypal",
        event_id=document["id"],
        event_type=document["event_type"],
        action=want.action,
        payment_reference=want.reference,
        amount=want.amount,
        currency=want.currency,
        refund_reference=want.refund,
        alias=want.alias,
        dispute_reference=want.dispute,
        dispute_stage=want.stage,
        dispute_won=want.won,
    )
    assert parse_delivery("paypal", document["id"], fixture_bytes(f"paypal/{name}")) == event


def test_a_capture_naming_its_order_is_matched_by_the_order_and_teaches_the_capture() -> None:
    body = body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"supplementary_data": RELATED})
    event = paypal.parse(body)
    assert (event.payment_reference, event.alias) == ("5O190127TN364715T", "27M47624FP291604U")


def test_a_refund_naming_its_order_and_capture_is_matched_by_the_order() -> None:
    related = {"related_ids": {"order_id": "5O190127TN364715T", "capture_id": "3C679366HH908993F"}}
    body = body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", resource={"supplementary_data": related})
    event = paypal.parse(body)
    assert (event.payment_reference, event.alias) == ("5O190127TN364715T", "3C679366HH908993F")
    assert (event.action, event.amount, event.refund_reference) == (
        Action.REFUND,
        99,
        "1Y107995YT783435V",
    )


def test_a_reversal_is_a_refund_of_the_capture_its_up_link_names() -> None:
    body = body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", event_type="PAYMENT.CAPTURE.REVERSED")
    event = paypal.parse(body)
    assert (event.action, event.payment_reference, event.amount) == (
        Action.REFUND,
        "0JF852973C016714D",
        99,
    )


def test_a_reversal_reported_on_the_capture_itself_returns_its_amount() -> None:
    body = body_of(
        "PAYMENT.CAPTURE.COMPLETED.v2.json",
        event_type="PAYMENT.CAPTURE.REVERSED",
        resource={"status": "REVERSED", "links": []},
    )
    event = paypal.parse(body)
    assert (event.action, event.payment_reference, event.refund_reference, event.amount) == (
        Action.REFUND,
        "27M47624FP291604U",
        "27M47624FP291604U",
        251,
    )


def test_a_completed_order_without_completed_captures_confirms_nothing() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    capture = document["resource"]["purchase_units"][0]["payments"]["captures"][0]
    capture["status"] = "PENDING"
    event = paypal.parse(json.dumps(document).encode())
    assert (event.action, event.payment_reference) == (Action.UNSUPPORTED, None)


def test_a_completed_order_sums_its_completed_captures() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    captures = document["resource"]["purchase_units"][0]["payments"]["captures"]
    captures.append(
        {
            **captures[0],
            "id": "4D679366HH908993G",
            "amount": {"currency_code": "USD", "value": "0.01"},
        }
    )
    event = paypal.parse(json.dumps(document).encode())
    assert (event.amount, event.alias) == (10001, None)


def test_an_event_type_payhook_does_not_act_on_is_unsupported() -> None:
    body = json.dumps({"id": "WH-1", "event_type": "CUSTOMER.DISPUTE.UPDATED", "resource": {}})
    assert paypal.parse(body.encode()) == PaymentEvent(
        "paypal", "WH-1", "CUSTOMER.DISPUTE.UPDATED", Action.UNSUPPORTED
    )


@pytest.mark.parametrize(
    ("outcome_code", "won"),
    [
        ("RESOLVED_BUYER_FAVOUR", False),
        ("ACCEPTED", False),
        ("RESOLVED_SELLER_FAVOUR", True),
        ("RESOLVED_WITH_PAYOUT", True),
        ("CANCELED_BY_BUYER", True),
    ],
)
def test_a_dispute_is_lost_only_when_resolved_for_the_buyer(outcome_code: str, won: bool) -> None:
    document = fixture_json("paypal/CUSTOMER.DISPUTE.RESOLVED.json")
    document["resource"]["dispute_outcome"] = {"outcome_code": outcome_code}
    assert paypal.parse(json.dumps(document).encode()).dispute_won is won


def test_a_dispute_naming_no_transaction_is_malformed() -> None:
    document = fixture_json("paypal/CUSTOMER.DISPUTE.CREATED.json")
    document["resource"]["disputed_transactions"] = []
    with pytest.raises(MalformedEvent, match="seller_transaction_id"):
        paypal.parse(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("value", "code", "minor"),
    [
        ("2.51", "USD", 251),
        ("100.00", "USD", 10000),
        ("0.1", "USD", 10),
        (".5", "USD", 50),
        ("7", "USD", 700),
        ("100", "JPY", 100),
        ("1.234", "KWD", 1234),
        ("12345678901234567.89", "USD", 1234567890123456789),  # beyond a float's precision
    ],
)
def test_decimal_strings_become_exact_minor_units(value: str, code: str, minor: int) -> None:
    assert paypal.minor_units_of(value, code, "amount") == minor


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2.515", "USD"),
        ("100.0", "JPY"),
        ("1.2345", "KWD"),
        ("-2.51", "USD"),
        ("", "USD"),
        (".", "USD"),
        ("-", "USD"),
        ("1.", "USD"),
        ("1e3", "USD"),
        ("1,00", "USD"),
        (" 1.00", "USD"),
        ("\u0663.00", "USD"),  # an Arabic-Indic three: a digit to Python, not to PayPal
        ("1" * 33, "USD"),
        (2.51, "USD"),
        (251, "USD"),
        (None, "USD"),
    ],
)
def test_amounts_that_are_not_exact_decimals_for_the_currency_are_malformed(
    value: object, code: str
) -> None:
    with pytest.raises(MalformedEvent):
        paypal.minor_units_of(value, code, "amount")


def test_a_negative_refund_amount_counts_as_its_magnitude() -> None:
    assert paypal.minor_units_of("-0.15", "USD", "amount", negative=True) == 15


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}}).encode(),
        json.dumps({"id": "WH-1", "resource": {}}).encode(),
        json.dumps({"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"}).encode(),
        body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"amount": None}),
        body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"id": ""}),
        body_of(
            "PAYMENT.CAPTURE.COMPLETED.v2.json",
            resource={"amount": {"currency_code": "US", "value": "2.51"}},
        ),
        body_of(
            "PAYMENT.CAPTURE.COMPLETED.v2.json",
            resource={"amount": {"currency_code": "USD", "value": 2.51}},
        ),
        body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", resource={"links": "up"}),
        body_of("PAYMENT.CAPTURE.COMPLETED.v1.json", resource={"parent_payment": 7}),
        body_of("CHECKOUT.ORDER.COMPLETED.v2.json", resource={"purchase_units": {}}),
    ],
)
def test_a_body_without_what_its_event_type_needs_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        paypal.parse(body)


def test_an_order_paid_in_two_currencies_is_malformed() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    captures = document["resource"]["purchase_units"][0]["payments"]["captures"]
    captures.append({**captures[0], "amount": {"currency_code": "EUR", "value": "1.00"}})
    with pytest.raises(MalformedEvent, match="several currencies"):
        paypal.parse(json.dumps(document).encode())
