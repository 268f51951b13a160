"""Turn each provider's webhook body into a normalized `PaymentEvent`."""

from __future__ import annotations

from dataclasses import dataclass

from domain.events import PaymentEvent
from domain.providers import adyen, paypal, standard, stripe
from domain.providers.adyen import CaptureMode

BUILT_IN = frozenset({stripe.PROVIDER, adyen.PROVIDER, paypal.PROVIDER})


@dataclass(frozen=True, slots=True)
class Reading:
    """What the merchant's provider accounts are set up to do, where the events alone do
    not say it: under Adyen's automatic capture an AUTHORISATION is the payment."""

    adyen_capture: CaptureMode = CaptureMode.AUTOMATIC


DEFAULT_READING = Reading()


def parse_delivery(
    provider: str, event_id: str, body: bytes, reading: Reading = DEFAULT_READING
) -> PaymentEvent:
    """Parse a stored body; any provider that is not built in is a Standard Webhooks source."""
    if provider == stripe.PROVIDER:
        return stripe.parse(body)
    if provider == adyen.PROVIDER:
        return adyen.parse_item(body, reading.adyen_capture)
    if provider == paypal.PROVIDER:
        return paypal.parse(body)
    return standard.parse(provider, event_id, body)
