"""What `payhook bench` sends: real Stripe event bodies with fresh ids, signed before timing."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.signing.stripe import sign_stripe

SAMPLES = Path(__file__).parent.parent / "demo_samples"
STRIPE_PATH = "/webhooks/stripe"
AMOUNT = 2000  # what the samples charge, in cents
CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Post:
    """One request of the load generator, ready to send."""

    path: str
    body: bytes
    headers: dict[str, str]


class StripeEvents:
    """Bodies of the two sample events that confirm a payment, with ids of our choosing."""

    def __init__(self) -> None:
        self._intent = _sample("payment_intent.succeeded")
        self._charge = _sample("charge.succeeded")

    def intent_succeeded(self, event_id: str, intent: str, charge: str) -> bytes:
        event = copy.deepcopy(self._intent)
        event["id"] = event_id
        obj = event["data"]["object"]
        obj["id"] = intent
        first = obj["charges"]["data"][0]
        first["id"], first["payment_intent"] = charge, intent
        return _body(event)

    def charge_succeeded(self, event_id: str, intent: str, charge: str) -> bytes:
        event = copy.deepcopy(self._charge)
        event["id"] = event_id
        obj = event["data"]["object"]
        obj["id"], obj["payment_intent"] = charge, intent
        return _body(event)


def intent_of(reference: str) -> str:
    return f"pi_{reference}"


def charge_of(reference: str) -> str:
    return f"ch_{reference}"


def signed(bodies: Sequence[bytes], secret: str, timestamp: int) -> list[Post]:
    """Stripe deliveries of `bodies`, signed as Stripe would at `timestamp`."""
    return [
        Post(
            STRIPE_PATH,
            body,
            {
                "Stripe-Signature": sign_stripe(body, secret, timestamp),
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        for body in bodies
    ]


def _sample(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return value


def _body(event: dict[str, Any]) -> bytes:
    # Stripe sends its events pretty-printed; so do we, to keep the body sizes real (~3-6 KB).
    return json.dumps(event, indent=2).encode()
