"""Standard Webhooks senders, in payhook's own event schema (see DESIGN.md)."""

from __future__ import annotations

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.providers._json import currency, load_object, mapping, minor_units, text

_ACTIONS = {
    "payment.succeeded": Action.CONFIRM,
    "payment.failed": Action.FAIL,
    "payment.canceled": Action.CANCEL,
    "payment.refunded": Action.REFUND,
}


def parse(source: str, webhook_id: str, body: bytes) -> PaymentEvent:
    """Normalize a body sent by source `source`; the `webhook-id` header is the event id."""
    if not webhook_id:
        raise MalformedEvent("webhook-id must not be empty")
    event = load_object(body)
    event_type = text(event, "type", "event")
    action = _ACTIONS.get(event_type)
    if action is None:
        return PaymentEvent(source, webhook_id, event_type, Action.UNSUPPORTED)
    data = mapping(event, "data", "event")
    refund_reference = None
    if action is Action.REFUND:
        refund_reference = text(data, "refund_reference", "data")
    amount = minor_units(data, "amount", "data")
    if action is Action.REFUND and amount == 0:
        raise MalformedEvent("data.amount of a refund must be positive")
    return PaymentEvent(
        source,
        webhook_id,
        event_type,
        action,
        text(data, "payment_reference", "data"),
        amount,
        currency(data, "currency", "data"),
        refund_reference,
    )
