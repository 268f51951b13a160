"""PayPal webhook events."""

from __future__ import annotations

from domain.events import MalformedEvent, PaymentEvent

PROVIDER = "paypal"


def parse(body: bytes) -> PaymentEvent:
    """Normalize a PayPal event body."""
    raise MalformedEvent("PayPal events are not supported yet")
