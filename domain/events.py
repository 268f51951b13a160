"""Provider events, normalized: what a webhook asks to happen to which payment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    AUTHORIZE = "authorize"  # money held on the buyer's account, not captured
    CONFIRM = "confirm"  # money captured
    FAIL = "fail"  # an attempt to pay failed (the buyer may try again)
    CAPTURE_FAILED = "capture_failed"  # the capture of an authorisation did not go through
    CANCEL = "cancel"  # canceled or expired before any capture
    REFUND = "refund"
    REFUND_FAILED = "refund_failed"  # a refund did not go through, or was reversed
    CANCEL_OR_REFUND = "cancel_or_refund"  # cancel if not captured yet, else refund in full
    # Dispute (chargeback) events; `PaymentEvent.dispute_stage` orders one dispute's events.
    DISPUTE = "dispute"  # a dispute opened: no money moves yet
    DISPUTE_FUNDS_WITHDRAWN = "dispute_funds_withdrawn"  # the disputed money was taken
    DISPUTE_FUNDS_REINSTATED = "dispute_funds_reinstated"  # and given back
    DISPUTE_CLOSED = "dispute_closed"  # won (the money stays or returns) or lost (it is gone)
    UNSUPPORTED = "unsupported"


class MalformedEvent(ValueError):
    """A body that does not carry what its event type requires; the message says what."""


@dataclass(frozen=True, slots=True)
class EventKey:
    """The idempotency key: a provider's event id is unique within that provider."""

    provider: str
    event_id: str


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One provider event as payhook understands it; amounts in minor units."""

    provider: str
    event_id: str
    event_type: str
    action: Action
    payment_reference: str | None = None
    amount: int | None = None
    currency: str | None = None
    refund_reference: str | None = None
    # Another provider reference of the same payment (Stripe's charge id beside its
    # PaymentIntent id), learned when the event applies: later refunds and disputes may name
    # only that one.
    alias: str | None = None
    dispute_reference: str | None = None
    dispute_won: bool | None = None  # set when a dispute closes
    # Where the event stands in its dispute's life, as its provider defines it: a dispute
    # event older than one already applied changes nothing, whatever order they arrive in.
    dispute_stage: int | None = None

    @property
    def key(self) -> EventKey:
        return EventKey(self.provider, self.event_id)

    def fingerprint(self) -> str:
        """A digest of what the event means, not of its bytes.

        Providers resend the same event with fields that legitimately change between attempts
        (Stripe's `pending_webhooks`, for one), so two deliveries conflict only when they would
        do different things to a payment.
        """
        parts: tuple[object, ...] = (
            self.event_type,
            self.action,
            self.payment_reference,
            self.amount,
            self.currency,
            self.refund_reference,
        )
        if self.dispute_reference is not None:  # appended only when set: older digests stay
            parts += (self.dispute_reference, self.dispute_won)
        text = "\x1f".join("" if part is None else str(part) for part in parts)
        return hashlib.sha256(text.encode()).hexdigest()
