"""Adyen notification items, parsed: every fixture to its action."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from domain.events import Action, MalformedEvent
from domain.providers import adyen, parse_delivery
from tests.fixture_files import FIXTURES
from tests.unit.adyen.support import ITEM_VECTORS, fixture_item

# --- events -------------------------------------------------------------------------------


def parse(item: dict[str, Any]) -> Any:
    return adyen.parse_item(json.dumps(item).encode())


@dataclass(frozen=True)
class Expected:
    action: Action
    payment_reference: str
    amount: int
    currency: str
    refund_reference: str | None = None
    dispute_reference: str | None = None
    dispute_stage: int | None = None
    dispute_won: bool | None = None


def dispute(action: Action, stage: int, won: bool | None = None) -> Expected:
    """One of the dispute fixtures: all events of that dispute share its pspReference."""
    return Expected(action, "XXXXXXXXXX", 1000, "EUR", None, "9915555555555555", stage, won)


FIXTURE_EVENTS = {
    "authorisation-true.json": Expected(Action.CONFIRM, "8313842560770001", 10100, "EUR"),
    "capture-true.json": Expected(Action.CONFIRM, "00000001", 23623, "USD"),
    "capture-false.json": Expected(Action.CAPTURE_FAILED, "00000001", 23623, "USD"),
    "offer-closed.json": Expected(Action.CANCEL, "000000275", 27211, "EUR"),
    "refund-true.json": Expected(
        Action.REFUND, "payment-2017-1-17-11-refund", 1500, "EUR", refund_reference="PSP_REFERENCE"
    ),
    "refund-false.json": Expected(
        Action.REFUND_FAILED,
        "payment-2017-1-17-11-refund",
        1500,
        "EUR",
        refund_reference="PSP_REFERENCE",
    ),
    "notification-of-chargeback.json": dispute(Action.DISPUTE, 1),
    "chargeback.json": dispute(Action.DISPUTE_FUNDS_WITHDRAWN, 2),
    "chargeback-reversed.json": dispute(Action.DISPUTE_FUNDS_REINSTATED, 3),
    "second-chargeback.json": dispute(Action.DISPUTE_FUNDS_WITHDRAWN, 4),
    "prearbitration-won.json": dispute(Action.DISPUTE_CLOSED, 5, won=True),
    "prearbitration-lost.json": dispute(Action.DISPUTE_CLOSED, 5, won=False),
}


def test_every_notification_fixture_has_an_expectation() -> None:
    folder = FIXTURES / "adyen" / "notifications"
    without_reference = {"cancellation-true.json"}  # refused as malformed, tested below
    assert {path.name for path in folder.glob("*.json")} - without_reference == set(FIXTURE_EVENTS)


@pytest.mark.parametrize(("name", "expected"), FIXTURE_EVENTS.items(), ids=list(FIXTURE_EVENTS))
def test_every_notification_fixture_parses_to_its_action(name: str, expected: Expected) -> None:
    item = fixture_item(name)
    event = parse(item)
    assert event.provider == "adyen"
    assert event.event_type == item["eventCode"]
    assert event.event_id == f"{item['pspReference']}:{item['eventCode']}:{item['success']}"
    assert (
        event.action,
        event.payment_reference,
        event.amount,
        event.currency,
        event.refund_reference,
        event.dispute_reference,
        event.dispute_stage,
        event.dispute_won,
    ) == (
        expected.action,
        expected.payment_reference,
        expected.amount,
        expected.currency,
        expected.refund_reference,
        expected.dispute_reference,
        expected.dispute_stage,
        expected.dispute_won,
    )


@pytest.mark.parametrize(
    ("mode", "action"),
    [(adyen.CaptureMode.AUTOMATIC, Action.CONFIRM), (adyen.CaptureMode.MANUAL, Action.AUTHORIZE)],
)
def test_an_authorisation_is_the_payment_only_under_automatic_capture(
    mode: adyen.CaptureMode, action: Action
) -> None:
    raw = json.dumps(fixture_item("authorisation-true.json")).encode()
    assert adyen.parse_item(raw, mode).action is action


def test_an_item_without_merchant_reference_is_malformed() -> None:
    # The cancellation fixture names only the payment's pspReference (originalReference).
    with pytest.raises(MalformedEvent, match="merchantReference is missing"):
        parse(fixture_item("cancellation-true.json"))


def synthetic(event_code: str, success: str = "true", **changes: Any) -> dict[str, Any]:
    item = {
        "pspReference": "PSP_MOD",
        "originalReference": "PSP_PAYMENT",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "order-7",
        "amount": {"currency": "eur", "value": 500},
        "eventCode": event_code,
        "success": success,
    }
    return {**item, **changes}


@pytest.mark.parametrize(
    ("event_code", "success", "action"),
    [
        ("AUTHORISATION", "false", Action.FAIL),
        ("CAPTURE_FAILED", "true", Action.CAPTURE_FAILED),
        ("CANCELLATION", "true", Action.CANCEL),
        ("CANCELLATION", "false", Action.UNSUPPORTED),
        ("REFUND_FAILED", "true", Action.REFUND_FAILED),
        ("CANCEL_OR_REFUND", "true", Action.CANCEL_OR_REFUND),
        ("CANCEL_OR_REFUND", "false", Action.UNSUPPORTED),
        ("REQUEST_FOR_INFORMATION", "true", Action.UNSUPPORTED),
        ("REPORT_AVAILABLE", "true", Action.UNSUPPORTED),
    ],
)
def test_event_codes_without_fixture_map_to_their_action(
    event_code: str, success: str, action: Action
) -> None:
    event = parse(synthetic(event_code, success))
    assert event.action is action
    assert event.event_id == f"PSP_MOD:{event_code}:{success}"
    if action is not Action.UNSUPPORTED:
        assert (event.payment_reference, event.amount, event.currency) == ("order-7", 500, "EUR")


@pytest.mark.parametrize("event_code", ["REFUND_FAILED", "CANCEL_OR_REFUND"])
def test_refunds_are_known_by_their_own_psp_reference(event_code: str) -> None:
    assert parse(synthetic(event_code)).refund_reference == "PSP_MOD"


def test_an_unsupported_item_needs_no_merchant_reference_nor_integer_amount() -> None:
    report = next(v for v in ITEM_VECTORS if v["name"] == "java_hmac_validator_report_available")
    item = {**report["item"], "merchantReference": None, "amount": {"value": "0"}}
    assert parse(item).action is Action.UNSUPPORTED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"success": "TRUE"}, 'success must be "true" or "false"'),
        ({"success": True}, "success must be a non-empty string"),
        ({"pspReference": ""}, "pspReference must be a non-empty string"),
        ({"eventCode": None}, "eventCode must be a non-empty string"),
        ({"amount": {"currency": "EUR", "value": "500"}}, "amount.value must be"),
        ({"amount": {"currency": "EUR", "value": -1}}, "amount.value must be"),
        ({"amount": {"value": 500}}, "amount.currency must be"),
        ({"merchantReference": 7}, "merchantReference must be a non-empty string"),
    ],
)
def test_malformed_items_say_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        parse(synthetic("AUTHORISATION", **changes))


def test_a_stored_item_is_parsed_by_the_delivery_dispatch() -> None:
    body = json.dumps(fixture_item("authorisation-true.json")).encode()
    assert parse_delivery("adyen", "ignored", body) == adyen.parse_item(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"live=false&eventCode=AUTHORISATION", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"live": "false"}', "notificationItems must be a non-empty list"),
        (b'{"notificationItems": []}', "notificationItems must be a non-empty list"),
        (b'{"notificationItems": [1]}', r"notificationItems\[0\] must be an object"),
        (b'{"notificationItems": [{}]}', r"notificationItems\[0\].NotificationRequestItem"),
    ],
)
def test_malformed_notification_requests_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        adyen.notification_items(body)
