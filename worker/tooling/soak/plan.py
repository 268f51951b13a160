"""What `payhook soak` sends: Stripe events for a few hundred payments, shuffled, with copies.

The bodies are the real sample payloads in worker/tooling/demo_samples with their ids and amounts
rewritten. Each payment gets a story (paid and maybe partly refunded, declined, or never
registered with payhook); filler events then bring the count of distinct events to what was
asked, so that several deliveries fight over the same payment rows.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.tooling.demo import SAMPLES

DUPLICATE_SHARE = 0.2
EVENTS_PER_PAYMENT = 16  # distinct events per payment, on average, stories and filler together


class Registration(StrEnum):
    UPFRONT = "upfront"  # registered before any webhook is sent
    LATE = "late"  # registered halfway through: its early webhooks wait for it
    NEVER = "never"  # never registered: its webhooks end `unmatched`


@dataclass
class PlannedPayment:
    index: int
    amount: int
    registration: Registration
    paid: bool  # its story confirms it (a declined payment only fails)
    refunds: list[tuple[str, int]] = field(default_factory=list)  # (id, amount) so far

    @property
    def intent(self) -> str:
        return f"pi_soak_{self.index:05d}"

    @property
    def charge(self) -> str:
        return f"ch_soak_{self.index:05d}"

    @property
    def order(self) -> str:
        return f"soak-order-{self.index:05d}"


@dataclass
class Plan:
    payments: list[PlannedPayment]
    bodies: list[bytes]  # in sending order, copies included
    distinct_events: int
    kinds: dict[str, int] = field(default_factory=dict)  # event type -> distinct events


def make_plan(deliveries: int, rng: random.Random) -> Plan:
    """`deliveries` bodies: 80 % distinct events, 20 % copies of them, all in random order."""
    copies = round(deliveries * DUPLICATE_SHARE)
    distinct = deliveries - copies
    count = max(4, round(distinct / EVENTS_PER_PAYMENT))
    payments = [_payment(i, rng) for i in range(count)]
    payments[-1].registration = Registration.NEVER  # at least one, however small the run
    events = _Events(rng)
    for payment in payments:
        events.story(payment)
    while len(events.bodies) < distinct:
        events.filler(rng.choice(payments))
    rng.shuffle(events.bodies)
    bodies = events.bodies[:distinct]
    repeated = [_resent(rng.choice(bodies), rng) for _ in range(copies)]
    everything = bodies + repeated
    rng.shuffle(everything)
    kinds: dict[str, int] = {}
    for body in bodies:
        kind = json.loads(body)["type"]
        kinds[kind] = kinds.get(kind, 0) + 1
    return Plan(payments, everything, len(bodies), kinds)


def _payment(index: int, rng: random.Random) -> PlannedPayment:
    roll = rng.random()
    registration = (
        Registration.NEVER
        if roll < 0.02
        else Registration.LATE
        if roll < 0.12
        else Registration.UPFRONT
    )
    amount = rng.randrange(500, 50_000, 100)
    return PlannedPayment(index, amount, registration, paid=rng.random() >= 0.15)


def _resent(body: bytes, rng: random.Random) -> bytes:
    """The same event sent again, as Stripe does: only `pending_webhooks` differs."""
    event = json.loads(body)
    event["pending_webhooks"] = rng.randrange(1, 5)
    return json.dumps(event).encode()


class _Events:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bodies: list[bytes] = []
        self._samples = {
            name: json.loads((SAMPLES / f"{name}.json").read_text())
            for name in (
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.succeeded",
                "charge.refund.updated",
                "charge.dispute.created",
                "checkout.session.completed",
            )
        }

    def story(self, p: PlannedPayment) -> None:
        if not p.paid:
            self.failed(p)
            if self.rng.random() < 0.5:
                self.failed(p)
            return
        if self.rng.random() < 0.2:
            self.failed(p)  # a first attempt declined, before (or, shuffled, after) success
        self.intent_succeeded(p)
        self.charge_succeeded(p)
        if self.rng.random() < 0.5:
            self.session_completed(p, p.amount)
        if self.rng.random() < 0.05:
            self.session_completed(p, p.amount + 100)  # amount_mismatch
        for _ in range(self.rng.choice((0, 0, 1, 1, 2, 3))):
            self.refund(p, max(100, p.amount // 4))
        if self.rng.random() < 0.1:
            self.refund(p, p.amount)  # usually more than what is left: amount_mismatch
        if p.refunds and self.rng.random() < 0.2:
            self.refund_failed(p, self.rng.choice(p.refunds))
        if self.rng.random() < 0.1:
            self.dispute(p)
        if self.rng.random() < 0.2:
            self.unsupported(p)

    def filler(self, p: PlannedPayment) -> None:
        """One more distinct event for `p`: mostly confirmations that find it confirmed."""
        if not p.paid:
            self.rng.choice((self.failed, self.unsupported))(p)
            return
        roll = self.rng.random()
        if roll < 0.4:
            self.charge_succeeded(p)
        elif roll < 0.7:
            self.intent_succeeded(p)
        elif roll < 0.8:
            self.failed(p)  # after the confirmation: stale
        elif roll < 0.9:
            self.unsupported(p)
        else:
            self.refund(p, max(100, p.amount // 10))

    # Each helper adds one distinct event, built from the sample of its type.

    def intent_succeeded(self, p: PlannedPayment) -> None:
        event, obj = self._event("payment_intent.succeeded", p)
        obj.update(id=p.intent, amount=p.amount, amount_received=p.amount, currency="usd")
        charge = obj["charges"]["data"][0]
        charge.update(id=p.charge, amount=p.amount, payment_intent=p.intent)
        self._add(event)

    def charge_succeeded(self, p: PlannedPayment) -> None:
        event, obj = self._event("charge.succeeded", p)
        obj.update(id=p.charge, amount=p.amount, amount_captured=p.amount, payment_intent=p.intent)
        self._add(event)

    def session_completed(self, p: PlannedPayment, amount: int) -> None:
        event, obj = self._event("checkout.session.completed", p)
        obj.update(
            id=f"cs_soak_{p.index:05d}_{len(self.bodies)}",
            amount_subtotal=amount,
            amount_total=amount,
            payment_intent=p.intent,
        )
        self._add(event)

    def failed(self, p: PlannedPayment) -> None:
        event, obj = self._event("payment_intent.payment_failed", p)
        obj.update(id=p.intent, amount=p.amount)
        self._add(event)

    def refund(self, p: PlannedPayment, amount: int) -> None:
        event, obj = self._event("charge.refund.updated", p)
        # Half of them name only the charge, as older API versions do: payhook finds the
        # payment through the charge id it learned from a confirmation.
        intent = p.intent if self.rng.random() < 0.5 else None
        refund = f"re_soak_{p.index:05d}_{len(self.bodies)}"
        obj.update(id=refund, amount=amount, charge=p.charge, payment_intent=intent)
        p.refunds.append((refund, amount))
        self._add(event)

    def refund_failed(self, p: PlannedPayment, refund: tuple[str, int]) -> None:
        """A refund reported earlier did not go through (a later event on the same refund)."""
        event, obj = self._event("charge.refund.updated", p)
        refund_id, amount = refund
        obj.update(id=refund_id, amount=amount, charge=p.charge, payment_intent=p.intent)
        obj["status"] = "failed"
        self._add(event)

    def dispute(self, p: PlannedPayment) -> None:
        event, obj = self._event("charge.dispute.created", p)
        obj.update(id=f"dp_soak_{p.index:05d}", amount=p.amount, charge=p.charge)
        obj["payment_intent"] = p.intent
        self._add(event)

    def unsupported(self, p: PlannedPayment) -> None:
        """A checkout paid by a delayed method: nothing to do until a later event."""
        event, obj = self._event("checkout.session.completed", p)
        obj.update(
            id=f"cs_soak_unpaid_{p.index:05d}_{len(self.bodies)}",
            payment_intent=p.intent,
            payment_status="unpaid",
        )
        self._add(event)

    def _event(self, sample: str, p: PlannedPayment) -> tuple[dict[str, Any], dict[str, Any]]:
        event = copy.deepcopy(self._samples[sample])
        event["id"] = f"evt_soak_{p.index:05d}_{len(self.bodies):06d}"
        obj: dict[str, Any] = event["data"]["object"]
        return event, obj

    def _add(self, event: dict[str, Any]) -> None:
        self.bodies.append(json.dumps(event).encode())
