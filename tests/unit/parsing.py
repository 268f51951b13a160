"""Shared by the parsing tests: the Stripe fixtures, what each must become, body builders."""

from __future__ import annotations

import json
from typing import Any

from domain.events import Action
from tests.fixture_files import FIXTURES, fixture_json

STRIPE_EVENTS = FIXTURES / "stripe" / "events"
PI = "pi_000000000000000000000000"  # the PaymentIntent, charge, refund and dispute of the fixtures
CH = "ch_000000000000000000000000"
RE = "re_000000000000000000000000"
DP = "dp_000000000000000000000000"
USD = {"currency": "USD"}

# file -> what the event asks for (PaymentEvent fields besides provider, event id and type)
STRIPE_EXPECTED: dict[str, dict[str, Any]] = {
    "payment_intent.succeeded.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,  # from the PaymentIntent's `charges` list (API before 2022-11-15)
        **USD,
    },
    "charge.succeeded.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,
        **USD,
    },
    "checkout.session.completed.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 3000,
        **USD,
    },
    "checkout.session.completed.payment_mode.json": {
        "action": Action.CONFIRM,
        "payment_reference": "pi_00000000000000",
        "amount": 25000,
        **USD,
    },
    "payment_intent.payment_failed.json": {
        "action": Action.FAIL,
        "payment_reference": PI,
        **USD,
    },
    "payment_intent.canceled.json": {
        "action": Action.CANCEL,
        "payment_reference": PI,
        **USD,
    },
    # This charge was made without a PaymentIntent: it is known by its charge id.
    "charge.refunded.json": {
        "action": Action.REFUND,
        "payment_reference": CH,
        "alias": CH,
        "refund_reference": RE,
        "amount": 100,
        **USD,
    },
    "charge.refund.updated.json": {
        "action": Action.REFUND,
        "payment_reference": CH,
        "alias": CH,
        "refund_reference": RE,
        "amount": 100,
        **USD,
    },
    "charge.dispute.created.json": {
        "action": Action.DISPUTE,
        "payment_reference": CH,
        "alias": CH,
        "dispute_reference": DP,
        "amount": 100,
        "dispute_stage": 1,
        **USD,
    },
    # An authorised charge captured; this charge was made without a PaymentIntent.
    "charge.captured.json": {
        "action": Action.CONFIRM,
        "payment_reference": CH,
        "alias": CH,
        "amount": 100,
        **USD,
    },
    "charge.failed.json": {"action": Action.UNSUPPORTED},
    # Manual capture: the PaymentIntent waits in requires_capture, the money only held.
    "payment_intent.amount_capturable_updated.json": {
        "action": Action.AUTHORIZE,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,
        **USD,
    },
    # Older fixtures (api_version 2018-01-23) with their own ids; the dispute names its charge.
    "charge.dispute.funds_reinstated.json": {
        "action": Action.DISPUTE_FUNDS_REINSTATED,
        "payment_reference": "ch_00000000000000",
        "alias": "ch_00000000000000",
        "dispute_reference": "dp_00000000000000",
        "amount": 1000,
        "dispute_stage": 3,
        **USD,
    },
    "charge.dispute.closed.json": {
        "action": Action.DISPUTE_CLOSED,
        "payment_reference": "ch_00000000000000",
        "alias": "ch_00000000000000",
        "dispute_reference": "dp_00000000000000",
        "amount": 1000,
        "dispute_stage": 4,
        "dispute_won": True,
        **USD,
    },
    # Assembled from Stripe's own OpenAPI fixtures (see MANIFEST.md).
    "charge.dispute.funds_withdrawn.json": {
        "action": Action.DISPUTE_FUNDS_WITHDRAWN,
        "payment_reference": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
        "alias": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
        "dispute_reference": "dp_1Pgc71B7WZ01zgkWMevJiAUx",
        "amount": 1000,
        "dispute_stage": 2,
        **USD,
    },
}


def stripe_event(name: str = "payment_intent.succeeded.json") -> dict[str, Any]:
    event: dict[str, Any] = fixture_json(f"stripe/events/{name}")
    return event


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def standard_body(event_type: str = "payment.succeeded", **data: Any) -> bytes:
    fields = {"payment_reference": "pay_1", "amount": 1500, "currency": "EUR", **data}
    return encode({"type": event_type, "data": fields})


def with_value(path: tuple[str, ...], value: Any) -> bytes:
    document = stripe_event()
    *parents, last = path
    target = document
    for name in parents:
        target = target[name]
    target[last] = value
    return encode(document)


AMOUNT = ("data", "object", "amount_received")
CURRENCY = ("data", "object", "currency")
