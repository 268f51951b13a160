"""Stripe events: which ones move a payment, and through which reference.

Payments are registered under their PaymentIntent id (or, for charges made without one, the
charge id). A confirmation also teaches payhook the charge id, because refunds and disputes of
older API versions name only the charge.

Under manual capture a charge succeeds uncaptured (`captured: false`) and the PaymentIntent
waits in `requires_capture` (`payment_intent.amount_capturable_updated`): the payment is
authorized, and only `charge.captured` or `payment_intent.succeeded` confirms it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.providers._json import currency, load_object, mapping, minor_units, text

PROVIDER = "stripe"
_WHERE = "data.object"
# A dispute closed with these statuses took no money back.
_DISPUTE_NOT_LOST = frozenset({"won", "warning_closed"})
# A dispute's events in the order Stripe sends them: created, funds withdrawn (when the card
# network takes the money), funds reinstated (the dispute won), closed (won or lost).
_DISPUTE_STAGES = {
    "charge.dispute.created": (Action.DISPUTE, 1),
    "charge.dispute.funds_withdrawn": (Action.DISPUTE_FUNDS_WITHDRAWN, 2),
    "charge.dispute.funds_reinstated": (Action.DISPUTE_FUNDS_REINSTATED, 3),
    "charge.dispute.closed": (Action.DISPUTE_CLOSED, 4),
}


def parse(body: bytes) -> PaymentEvent:
    """Normalize a Stripe event body; an event type we do not act on is `UNSUPPORTED`."""
    event = load_object(body)
    event_id = text(event, "id", "event")
    event_type = text(event, "type", "event")
    obj = mapping(mapping(event, "data", "event"), "object", "event.data")
    reader = _READERS.get(event_type)
    fields = reader(obj) if reader is not None else None
    if fields is None:
        return PaymentEvent(PROVIDER, event_id, event_type, Action.UNSUPPORTED)
    return PaymentEvent(PROVIDER, event_id, event_type, **fields)


def _intent_succeeded(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": Action.CONFIRM,
        "payment_reference": text(obj, "id", _WHERE),
        "amount": minor_units(obj, "amount_received", _WHERE),
        "currency": currency(obj, "currency", _WHERE),
        "alias": _latest_charge(obj),
    }


def _intent_closed(action: Action) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def read(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "action": action,
            "payment_reference": text(obj, "id", _WHERE),
            "currency": currency(obj, "currency", _WHERE),
        }

    return read


def _intent_capturable(obj: dict[str, Any]) -> dict[str, Any] | None:
    """payment_intent.amount_capturable_updated: the hold, ready to be captured."""
    if obj.get("status") != "requires_capture":
        return None
    return {
        "action": Action.AUTHORIZE,
        "payment_reference": text(obj, "id", _WHERE),
        "amount": minor_units(obj, "amount_capturable", _WHERE),
        "currency": currency(obj, "currency", _WHERE),
        "alias": _latest_charge(obj),
    }


def _charge_succeeded(obj: dict[str, Any]) -> dict[str, Any]:
    """charge.succeeded: captured, or (manual capture, `captured: false`) only authorized."""
    charge = text(obj, "id", _WHERE)
    return {
        "action": Action.AUTHORIZE if obj.get("captured") is False else Action.CONFIRM,
        "payment_reference": _id(obj, "payment_intent") or charge,
        "alias": charge,
        "amount": minor_units(obj, "amount", _WHERE),
        "currency": currency(obj, "currency", _WHERE),
    }


def _charge_captured(obj: dict[str, Any]) -> dict[str, Any]:
    """charge.captured: an authorized charge captured (for `amount_captured`)."""
    charge = text(obj, "id", _WHERE)
    captured = "amount_captured" if "amount_captured" in obj else "amount"
    return {
        "action": Action.CONFIRM,
        "payment_reference": _id(obj, "payment_intent") or charge,
        "alias": charge,
        "amount": minor_units(obj, captured, _WHERE),
        "currency": currency(obj, "currency", _WHERE),
    }


def _session_completed(obj: dict[str, Any]) -> dict[str, Any] | None:
    intent = _id(obj, "payment_intent")
    if obj.get("payment_status") != "paid" or intent is None:
        # A delayed payment method (or a subscription) is confirmed by a later event.
        return None
    return {
        "action": Action.CONFIRM,
        "payment_reference": intent,
        "amount": minor_units(obj, "amount_total", _WHERE),
        "currency": currency(obj, "currency", _WHERE),
    }


def _charge_refunded(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The newest refund listed on the charge; each refund counts once, by its id."""
    listed = obj.get("refunds")
    refunds = listed.get("data") if isinstance(listed, dict) else None
    if not refunds or not isinstance(refunds[0], dict):
        # Newer API versions no longer embed refunds: charge.refund.updated names each one.
        return None
    return _refund(refunds[0], charge=text(obj, "id", _WHERE), intent=_id(obj, "payment_intent"))


def _refund_object(obj: dict[str, Any]) -> dict[str, Any] | None:
    return _refund(obj, charge=_id(obj, "charge"), intent=_id(obj, "payment_intent"))


def _refund(
    refund: dict[str, Any], *, charge: str | None, intent: str | None
) -> dict[str, Any] | None:
    where = "refund"
    status = refund.get("status")
    if status == "succeeded":
        action = Action.REFUND
    elif status in ("failed", "canceled"):
        action = Action.REFUND_FAILED
    else:
        return None  # pending or requires_action: a later update settles it
    reference = intent or charge
    if reference is None:
        raise MalformedEvent("refund names neither a charge nor a PaymentIntent")
    return {
        "action": action,
        "payment_reference": reference,
        "alias": charge,
        "refund_reference": text(refund, "id", where),
        "amount": minor_units(refund, "amount", where),
        "currency": currency(refund, "currency", where),
    }


def _dispute(event_type: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    action, stage = _DISPUTE_STAGES[event_type]

    def read(obj: dict[str, Any]) -> dict[str, Any]:
        charge = _id(obj, "charge")
        reference = _id(obj, "payment_intent") or charge
        if reference is None:
            raise MalformedEvent("dispute names neither a charge nor a PaymentIntent")
        fields = {
            "action": action,
            "payment_reference": reference,
            "alias": charge,
            "dispute_reference": text(obj, "id", _WHERE),
            "amount": minor_units(obj, "amount", _WHERE),
            "currency": currency(obj, "currency", _WHERE),
            "dispute_stage": stage,
        }
        if action is Action.DISPUTE_CLOSED:
            fields["dispute_won"] = obj.get("status") in _DISPUTE_NOT_LOST
        return fields

    return read


def _latest_charge(intent: dict[str, Any]) -> str | None:
    """The PaymentIntent's charge: `latest_charge` now, the `charges` list before 2022-11-15."""
    latest = _id(intent, "latest_charge")
    if latest is not None:
        return latest
    charges = intent.get("charges")
    data = charges.get("data") if isinstance(charges, dict) else None
    if data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
        charge: str = data[0]["id"]
        return charge
    return None


def _id(obj: dict[str, Any], name: str) -> str | None:
    """An id field that may be null, a string, or an expanded object."""
    value = obj.get(name)
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{_WHERE}.{name} must be an id")
    return value


_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_closed(Action.FAIL),
    "payment_intent.canceled": _intent_closed(Action.CANCEL),
    "payment_intent.amount_capturable_updated": _intent_capturable,
    "charge.succeeded": _charge_succeeded,
    "charge.captured": _charge_captured,
    "checkout.session.completed": _session_completed,
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_object,
    "refund.created": _refund_object,
    "refund.updated": _refund_object,
    **{event_type: _dispute(event_type) for event_type in _DISPUTE_STAGES},
}
