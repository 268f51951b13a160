"""Adyen standard notifications: one NotificationRequestItem is one delivery."""

from __future__ import annotations

from domain.events import MalformedEvent, PaymentEvent

PROVIDER = "adyen"


def parse_item(body: bytes) -> PaymentEvent:
    """Normalize one stored NotificationRequestItem (JSON object)."""
    raise MalformedEvent("Adyen notifications are not supported yet")
