"""Turn each provider's webhook body into a normalized `PaymentEvent`."""

from __future__ import annotations

from domain.events import PaymentEvent
from domain.providers import adyen, paypal, standard, stripe

BUILT_IN = frozenset({stripe.PROVIDER, adyen.PROVIDER, paypal.PROVIDER})


def parse_delivery(provider: str, event_id: str, body: bytes) -> PaymentEvent:
    """Parse a stored body; any provider that is not built in is a Standard Webhooks source."""
    if provider == stripe.PROVIDER:
        return stripe.parse(body)
    if provider == adyen.PROVIDER:
        return adyen.parse_item(body)
    if provider == paypal.PROVIDER:
        return paypal.parse(body)
    return standard.parse(provider, event_id, body)
