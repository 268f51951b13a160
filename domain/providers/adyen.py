"""Adyen standard notifications: one NotificationRequestItem is one delivery.

Payments paid through Adyen are registered with provider "adyen" and, as provider reference,
the `merchantReference` the merchant sent with the payment request: Adyen repeats it on the
payment's own notifications and on those of its modifications (captures, refunds,
cancellations, chargebacks), whose `pspReference` is the modification's own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.providers._json import currency, load_object, mapping, minor_units, text

PROVIDER = "adyen"
_WHERE = "NotificationRequestItem"


class CaptureMode(StrEnum):
    """How the merchant account captures: Adyen's default captures every authorisation at
    once (and sends no CAPTURE); under manual capture a CAPTURE notification confirms."""

    AUTOMATIC = "automatic"
    MANUAL = "manual"


# (eventCode, success) -> action; every other pair is UNSUPPORTED (ignored).
_ACTIONS: dict[tuple[str, bool], Action] = {
    ("AUTHORISATION", False): Action.FAIL,
    # A capture may be partial: its amount then differs from the payment's, and the domain
    # rejects it as amount_mismatch.
    ("CAPTURE", True): Action.CONFIRM,
    ("CAPTURE", False): Action.CAPTURE_FAILED,
    ("CANCELLATION", True): Action.CANCEL,
    ("REFUND", True): Action.REFUND,
    ("REFUND", False): Action.REFUND_FAILED,
    ("CANCEL_OR_REFUND", True): Action.CANCEL_OR_REFUND,
}
# Adyen sends these with success "true" only: the code itself says what happened.
_WHATEVER_SUCCESS: dict[str, Action] = {
    "CAPTURE_FAILED": Action.CAPTURE_FAILED,
    "REFUND_FAILED": Action.REFUND_FAILED,
    "OFFER_CLOSED": Action.CANCEL,  # the shopper never completed the payment: it expired
}
# A dispute's events share the dispute's pspReference and come in this order: notified
# (no money yet), charged back (money deducted), reversed (returned), second chargeback
# (deducted again, the defence declined), pre-arbitration won (returned) or lost (kept).
_DISPUTE_STAGES: dict[str, tuple[Action, int, bool | None]] = {
    "NOTIFICATION_OF_CHARGEBACK": (Action.DISPUTE, 1, None),
    "CHARGEBACK": (Action.DISPUTE_FUNDS_WITHDRAWN, 2, None),
    "CHARGEBACK_REVERSED": (Action.DISPUTE_FUNDS_REINSTATED, 3, None),
    "SECOND_CHARGEBACK": (Action.DISPUTE_FUNDS_WITHDRAWN, 4, None),
    "PREARBITRATION_WON": (Action.DISPUTE_CLOSED, 5, True),
    "PREARBITRATION_LOST": (Action.DISPUTE_CLOSED, 5, False),
}
# A refund is known by the pspReference of its own notification; Adyen reports a refund that
# did not go through under that same pspReference.
_REFUNDS = frozenset({Action.REFUND, Action.REFUND_FAILED, Action.CANCEL_OR_REFUND})
_SUCCESS = {"true": True, "false": False}


def notification_items(body: bytes) -> list[dict[str, Any]]:
    """The NotificationRequestItem objects of a notification request body, in order."""
    request = load_object(body)
    entries = request.get("notificationItems")
    if not isinstance(entries, list) or not entries:
        raise MalformedEvent("notificationItems must be a non-empty list")
    items = []
    for index, entry in enumerate(entries):
        where = f"notificationItems[{index}]"
        if not isinstance(entry, dict):
            raise MalformedEvent(f"{where} must be an object")
        items.append(mapping(entry, "NotificationRequestItem", where))
    return items


def event_id(item: dict[str, Any]) -> str:
    """The idempotency key of one notification item: `pspReference:eventCode:success`.

    Adyen resends a notification, unchanged, until it is accepted, and identifies it by
    eventCode and pspReference. The same pair can come back with the other `success` value
    (an AUTHORISATION refused after all, say), which is another fact about the payment: so
    `success` is part of the id, and each of the two is processed once.
    """
    return ":".join((text(item, "pspReference", _WHERE), *_code_and_success(item)))


def parse_item(body: bytes, capture: CaptureMode = CaptureMode.AUTOMATIC) -> PaymentEvent:
    """Normalize one stored NotificationRequestItem (JSON object)."""
    item = load_object(body)
    event_code, success = _code_and_success(item)
    stage: tuple[Action, int, bool | None] | None = _DISPUTE_STAGES.get(event_code)
    if stage is not None:
        action = stage[0]
    elif (event_code, success) == ("AUTHORISATION", "true"):
        action = Action.CONFIRM if capture is CaptureMode.AUTOMATIC else Action.AUTHORIZE
    else:
        action = _WHATEVER_SUCCESS.get(event_code) or _ACTIONS.get(
            (event_code, _SUCCESS[success]), Action.UNSUPPORTED
        )
    if action is Action.UNSUPPORTED:
        return PaymentEvent(PROVIDER, event_id(item), event_code, Action.UNSUPPORTED)
    psp_reference = text(item, "pspReference", _WHERE)
    if not item.get("merchantReference"):
        raise MalformedEvent(
            f"{_WHERE}.merchantReference is missing: payhook matches Adyen payments by "
            f"merchantReference, and a {event_code} notification without it matches none"
        )
    amount = mapping(item, "amount", _WHERE)
    return PaymentEvent(
        provider=PROVIDER,
        event_id=event_id(item),
        event_type=event_code,
        action=action,
        payment_reference=text(item, "merchantReference", _WHERE),
        amount=minor_units(amount, "value", f"{_WHERE}.amount"),
        currency=currency(amount, "currency", f"{_WHERE}.amount"),
        refund_reference=psp_reference if action in _REFUNDS else None,
        dispute_reference=psp_reference if stage is not None else None,
        dispute_stage=None if stage is None else stage[1],
        dispute_won=None if stage is None else stage[2],
    )


def _code_and_success(item: dict[str, Any]) -> tuple[str, str]:
    success = text(item, "success", _WHERE)
    if success not in _SUCCESS:
        raise MalformedEvent(f'{_WHERE}.success must be "true" or "false"')
    return text(item, "eventCode", _WHERE), success
