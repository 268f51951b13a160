"""Stripe events: which ones move a payment, matched through the PaymentIntent id."""

from __future__ import annotations

from typing import Any

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.providers._json import currency, load_object, mapping, minor_units, text

PROVIDER = "stripe"


def parse(body: bytes) -> PaymentEvent:
    """Normalize a Stripe event body; an event type we do not act on is `UNSUPPORTED`."""
    event = load_object(body)
    event_id = text(event, "id", "event")
    event_type = text(event, "type", "event")
    obj = mapping(mapping(event, "data", "event"), "object", "event.data")
    where = "data.object"

    def unsupported() -> PaymentEvent:
        return PaymentEvent(PROVIDER, event_id, event_type, Action.UNSUPPORTED)

    def on_intent(action: Action, amount_field: str | None) -> PaymentEvent:
        amount = None if amount_field is None else minor_units(obj, amount_field, where)
        return PaymentEvent(
            PROVIDER,
            event_id,
            event_type,
            action,
            text(obj, "id", where),
            amount,
            currency(obj, "currency", where),
        )

    if event_type == "payment_intent.succeeded":
        return on_intent(Action.CONFIRM, "amount_received")
    if event_type == "payment_intent.payment_failed":
        return on_intent(Action.FAIL, None)
    if event_type == "charge.succeeded":
        return _through_intent(event_id, event_type, obj, "amount") or unsupported()
    if event_type == "checkout.session.completed" and obj.get("payment_status") == "paid":
        # Other payment statuses (a delayed payment method) are confirmed by a later event.
        return _through_intent(event_id, event_type, obj, "amount_total") or unsupported()
    return unsupported()


def _through_intent(
    event_id: str, event_type: str, obj: dict[str, Any], amount_field: str
) -> PaymentEvent | None:
    """A confirmation matched through the object's PaymentIntent; None when it has none."""
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):  # an expanded PaymentIntent
        intent = intent.get("id")
    if intent is None:
        return None  # a charge outside PaymentIntents: nothing payhook could match
    if not isinstance(intent, str) or not intent:
        raise MalformedEvent("data.object.payment_intent must be a PaymentIntent id")
    where = "data.object"
    return PaymentEvent(
        PROVIDER,
        event_id,
        event_type,
        Action.CONFIRM,
        intent,
        minor_units(obj, amount_field, where),
        currency(obj, "currency", where),
    )
