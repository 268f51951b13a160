"""What became of a delivery: exactly one outcome each."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutcomeKind(StrEnum):
    APPLIED = "applied"
    ACKNOWLEDGED_DUPLICATE = "acknowledged_duplicate"
    REJECTED = "rejected"
    IGNORED = "ignored"
    UNMATCHED = "unmatched"
    DEAD = "dead"
    # Never recorded: the delivery waits in the database (no payment yet, or the payment has
    # not reached the state the event needs) and is tried again when woken.
    DEFERRED = "deferred"


class Reason(StrEnum):
    SAME_EVENT = "same_event"
    ALREADY_IN_STATE = "already_in_state"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    INVALID_TRANSITION = "invalid_transition"
    PAYLOAD_CONFLICT = "payload_conflict"
    UNSUPPORTED_EVENT = "unsupported_event"
    STALE = "stale"
    NO_PAYMENT = "no_payment"
    AWAITING_STATE = "awaiting_state"  # the payment has not reached the state the event needs
    MALFORMED_EVENT = "malformed_event"
    PROCESSING_ERROR = "processing_error"
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"
    WORKER_LOST = "worker_lost"  # its worker died every time it was tried


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision for one delivery; `duplicate_of` is the delivery that first applied it."""

    kind: OutcomeKind
    reason: Reason | None = None
    transition: str | None = None
    payment_id: int | None = None
    duplicate_of: int | None = None

    @property
    def is_deferred(self) -> bool:
        return self.kind is OutcomeKind.DEFERRED

    @classmethod
    def applied(cls, transition: str, payment_id: int) -> Outcome:
        return cls(OutcomeKind.APPLIED, None, transition, payment_id)

    @classmethod
    def same_event(cls, first_delivery_id: int | None) -> Outcome:
        return cls(
            OutcomeKind.ACKNOWLEDGED_DUPLICATE, Reason.SAME_EVENT, duplicate_of=first_delivery_id
        )

    @classmethod
    def already_in_state(cls, payment_id: int, applied_by: int | None) -> Outcome:
        return cls(
            OutcomeKind.ACKNOWLEDGED_DUPLICATE,
            Reason.ALREADY_IN_STATE,
            payment_id=payment_id,
            duplicate_of=applied_by,
        )

    @classmethod
    def rejected(
        cls, reason: Reason, payment_id: int | None = None, duplicate_of: int | None = None
    ) -> Outcome:
        return cls(OutcomeKind.REJECTED, reason, payment_id=payment_id, duplicate_of=duplicate_of)

    @classmethod
    def ignored(cls, reason: Reason, payment_id: int | None = None) -> Outcome:
        return cls(OutcomeKind.IGNORED, reason, payment_id=payment_id)

    @classmethod
    def deferred(cls, reason: Reason, payment_id: int | None = None) -> Outcome:
        return cls(OutcomeKind.DEFERRED, reason, payment_id=payment_id)

    @classmethod
    def dead(cls, reason: Reason) -> Outcome:
        return cls(OutcomeKind.DEAD, reason)

    @classmethod
    def awaiting_state(cls, payment_id: int) -> Outcome:
        return cls(OutcomeKind.DEFERRED, Reason.AWAITING_STATE, payment_id=payment_id)

    def expire(self) -> Outcome:
        """What a deferred outcome becomes once its wait is over: `unmatched`, replayable."""
        reason = (
            Reason.AWAITING_STATE if self.reason is Reason.AWAITING_STATE else Reason.NO_PAYMENT
        )
        return Outcome(OutcomeKind.UNMATCHED, reason, payment_id=self.payment_id)
