"""Orders and payments as a state machine; every event gets a decision, never an exception.

Money moves only when it really moves: an authorisation holds money and pays nothing; a
capture pays; a refund or a dispute's withdrawal takes money back, and a reinstatement returns
it. Each decision is the same whatever order a payment's events arrive in: an event that needs
a state the payment has not reached waits for it (deferred), a refund that failed keeps its
late success from applying, and a dispute's older stage never undoes a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from domain.events import Action, PaymentEvent
from domain.outcomes import Outcome, Reason


class PaymentState(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    AUTHORIZED = "authorized"  # money held on the buyer's account, not captured
    CONFIRMED = "confirmed"  # captured
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # kept, so that a success delivered after its failure never applies


class DisputeStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


# Stripe lets a PaymentIntent succeed after a failed attempt, so `failed` is not final.
_OPEN = frozenset({PaymentState.CREATED, PaymentState.PENDING, PaymentState.FAILED})
_UNCAPTURED = _OPEN | {PaymentState.AUTHORIZED}
_SETTLED = frozenset({PaymentState.CONFIRMED, PaymentState.REFUNDED})
_DISPUTES = frozenset(
    {
        Action.DISPUTE,
        Action.DISPUTE_FUNDS_WITHDRAWN,
        Action.DISPUTE_FUNDS_REINSTATED,
        Action.DISPUTE_CLOSED,
    }
)
# Only these events consult a payment's earlier refunds and disputes.
_WITH_HISTORY = _DISPUTES | {
    Action.REFUND,
    Action.REFUND_FAILED,
    Action.CANCEL_OR_REFUND,
    Action.CAPTURE_FAILED,
}


def needs_history(action: Action) -> bool:
    """Whether deciding `action` needs the payment's refunds and disputes."""
    return action in _WITH_HISTORY


@dataclass(slots=True)
class Order:
    """An order is paid once captured money, less refunds and money lost to disputes,
    reaches its total."""

    id: int
    reference: str
    total: int
    currency: str
    paid_amount: int = 0
    refunded_amount: int = 0
    disputed_amount: int = 0  # withdrawn by disputes (chargebacks) and not returned

    @property
    def net_paid(self) -> int:
        return self.paid_amount - self.refunded_amount - self.disputed_amount

    @property
    def status(self) -> OrderStatus:
        return OrderStatus.PAID if self.net_paid >= self.total else OrderStatus.PENDING

    @property
    def overpaid_amount(self) -> int:
        return max(0, self.net_paid - self.total)

    def snapshot(self) -> Order:
        """The order as it is now, to compare with after a change."""
        return replace(self)


@dataclass(slots=True)
class Refund:
    amount: int
    status: RefundStatus = RefundStatus.SUCCEEDED


@dataclass(slots=True)
class Dispute:
    amount: int
    status: DisputeStatus = DisputeStatus.OPEN
    withdrawn: int = 0  # what the dispute has taken and not given back
    stage: int = 0  # the provider's stage of the newest event applied


@dataclass(slots=True)
class Payment:
    id: int
    order_id: int
    provider: str
    provider_reference: str
    amount: int
    currency: str
    state: PaymentState = PaymentState.PENDING
    confirmed_by: int | None = None  # the delivery that confirmed it; None when done by hand
    refunded_amount: int = 0
    refunds: dict[str, Refund] = field(default_factory=dict)  # by refund reference
    disputes: dict[str, Dispute] = field(default_factory=dict)
    disputed_amount: int = 0

    def snapshot(self) -> Payment:
        """The payment as it is now, its refunds and disputes included, to compare with after
        a change (they are changed in place)."""
        return replace(
            self,
            refunds={ref: replace(refund) for ref, refund in self.refunds.items()},
            disputes={ref: replace(dispute) for ref, dispute in self.disputes.items()},
        )

    def apply(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        """Decide what `event` does to this payment (and its order), and do it."""
        if event.currency is not None and event.currency != self.currency:
            return Outcome.rejected(Reason.CURRENCY_MISMATCH, self.id)
        match event.action:
            case Action.AUTHORIZE:
                return self._authorize(event)
            case Action.CONFIRM:
                return self._confirm(event, order, delivery_id)
            case Action.FAIL:
                return self._close(PaymentState.FAILED)
            case Action.CAPTURE_FAILED:
                return self._capture_failed(order)
            case Action.CANCEL:
                return self._close(PaymentState.CANCELED)
            case Action.REFUND:
                return self._refund(event.refund_reference or event.event_id, event.amount, order)
            case Action.REFUND_FAILED:
                return self._refund_failed(event.refund_reference or "", event.amount, order)
            case Action.CANCEL_OR_REFUND:
                if self.state in _UNCAPTURED:
                    return self._close(PaymentState.CANCELED)
                return self._refund(event.refund_reference or event.event_id, None, order)
        if event.action in _DISPUTES:
            return self._dispute(event, order)
        return Outcome.ignored(Reason.UNSUPPORTED_EVENT, self.id)

    def confirm_manually(self, order: Order) -> Outcome:
        """A confirmation by an operator or the host application, not by a provider."""
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        if self.state not in _UNCAPTURED:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        return self._move_to_confirmed(order, None)

    @property
    def _net(self) -> int:
        """What of the captured amount is still the merchant's."""
        return self.amount - self.refunded_amount - self.disputed_amount

    def _authorize(self, event: PaymentEvent) -> Outcome:
        if event.amount is not None and event.amount != self.amount:
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        if self.state is PaymentState.AUTHORIZED or self.state in _SETTLED:
            # Held already, or captured: a capture implies its authorisation.
            return Outcome.already_in_state(self.id, None)
        if self.state is PaymentState.CANCELED:
            return Outcome.ignored(Reason.STALE, self.id)  # the hold was voided meanwhile
        transition = f"{self.state}->{PaymentState.AUTHORIZED}"
        self.state = PaymentState.AUTHORIZED
        return Outcome.applied(transition, self.id)

    def _confirm(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        if event.amount is not None and event.amount != self.amount:
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        if self.state is PaymentState.REFUNDED:
            return Outcome.ignored(Reason.STALE, self.id)
        if self.state not in _UNCAPTURED:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        return self._move_to_confirmed(order, delivery_id)

    def _move_to_confirmed(self, order: Order, delivery_id: int | None) -> Outcome:
        transition = f"{self.state}->{PaymentState.CONFIRMED}"
        self.state = PaymentState.CONFIRMED
        self.confirmed_by = delivery_id
        order.paid_amount += self.amount
        return Outcome.applied(transition, self.id)

    def _close(self, target: PaymentState) -> Outcome:
        if self.state is target:
            return Outcome.already_in_state(self.id, None)
        if self.state not in _UNCAPTURED or (
            # Providers fail an attempt to pay, never a hold: a failure beside an
            # authorisation is an earlier attempt's, whichever arrives first.
            target is PaymentState.FAILED and self.state is PaymentState.AUTHORIZED
        ):
            # A failure or cancellation that arrives after the payment settled changes nothing.
            return Outcome.ignored(Reason.STALE, self.id)
        transition = f"{self.state}->{target}"
        self.state = target
        return Outcome.applied(transition, self.id)

    def _capture_failed(self, order: Order) -> Outcome:
        """The capture of a hold did not go through (Adyen's CAPTURE_FAILED)."""
        if self.state is PaymentState.FAILED:
            return Outcome.already_in_state(self.id, None)
        if self.state in _OPEN:
            return Outcome.awaiting_state(self.id)  # its authorisation is still on its way
        if self.state is PaymentState.CONFIRMED and not self.refunds and not self.disputes:
            # Under automatic capture the authorisation counted as captured: take it back.
            order.paid_amount -= self.amount
            self.confirmed_by = None
        elif self.state is not PaymentState.AUTHORIZED:
            return Outcome.ignored(Reason.STALE, self.id)
        transition = f"{self.state}->{PaymentState.FAILED}"
        self.state = PaymentState.FAILED
        return Outcome.applied(transition, self.id)

    def _refund(self, reference: str, amount: int | None, order: Order) -> Outcome:
        known = self.refunds.get(reference)
        if known is not None:
            if known.status is RefundStatus.FAILED:
                return Outcome.ignored(Reason.STALE, self.id)  # its failure came first
            return Outcome.already_in_state(self.id, None)
        if self.state in _UNCAPTURED:
            return Outcome.awaiting_state(self.id)  # the capture is probably on its way
        if self.state is PaymentState.CANCELED:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        remaining = self._net
        if amount is None:
            amount = remaining
        if amount <= 0 or amount > remaining:
            if remaining == 0 and self.state is PaymentState.REFUNDED:
                return Outcome.already_in_state(self.id, None)
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        before = self.state
        self.refunds[reference] = Refund(amount)
        self.refunded_amount += amount
        order.refunded_amount += amount
        if self.refunded_amount == self.amount:
            self.state = PaymentState.REFUNDED
        transition = "refund:partial" if before is self.state else f"{before}->{self.state}"
        return Outcome.applied(transition, self.id)

    def _refund_failed(self, reference: str, amount: int | None, order: Order) -> Outcome:
        known = self.refunds.get(reference)
        if known is None:
            # Its success may still be on its way: remember the failure, so it never applies.
            self.refunds[reference] = Refund(amount or 0, RefundStatus.FAILED)
            return Outcome.applied("refund:failed", self.id)
        if known.status is RefundStatus.FAILED:
            return Outcome.already_in_state(self.id, None)
        before = self.state
        known.status = RefundStatus.FAILED
        self.refunded_amount -= known.amount
        order.refunded_amount -= known.amount
        if self.state is PaymentState.REFUNDED:
            self.state = PaymentState.CONFIRMED
        transition = "refund:reversed" if before is self.state else f"{before}->{self.state}"
        return Outcome.applied(transition, self.id)

    def _dispute(self, event: PaymentEvent, order: Order) -> Outcome:
        """Move a dispute to the event's stage, and the money with it."""
        reference = event.dispute_reference or event.event_id
        stage = event.dispute_stage or 0
        dispute = self.disputes.get(reference)
        if dispute is not None and stage <= dispute.stage:
            if stage == dispute.stage:
                return Outcome.already_in_state(self.id, None)
            return Outcome.ignored(Reason.STALE, self.id)  # a later stage is applied already
        if self.state not in _SETTLED:
            return Outcome.awaiting_state(self.id)  # only captured money can be disputed
        if dispute is None:
            amount = self.amount if event.amount is None else event.amount
            dispute = self.disputes[reference] = Dispute(amount)
        transition, status, withdrawn = _DISPUTE_MOVES[event.action](event, dispute)
        # Never more than what is still the merchant's (refunds came first).
        withdrawn = min(withdrawn, self._net + dispute.withdrawn)
        moved = withdrawn - dispute.withdrawn
        dispute.stage, dispute.status, dispute.withdrawn = stage, status, withdrawn
        self.disputed_amount += moved
        order.disputed_amount += moved
        return Outcome.applied(transition, self.id)


def _opened(event: PaymentEvent, dispute: Dispute) -> tuple[str, DisputeStatus, int]:
    return "dispute:opened", DisputeStatus.OPEN, dispute.withdrawn


def _withdrawn(event: PaymentEvent, dispute: Dispute) -> tuple[str, DisputeStatus, int]:
    return "dispute:funds_withdrawn", DisputeStatus.OPEN, dispute.amount


def _reinstated(event: PaymentEvent, dispute: Dispute) -> tuple[str, DisputeStatus, int]:
    return "dispute:funds_reinstated", DisputeStatus.OPEN, 0


def _closed(event: PaymentEvent, dispute: Dispute) -> tuple[str, DisputeStatus, int]:
    if event.dispute_won:
        return "dispute:won", DisputeStatus.WON, 0
    lost = dispute.amount if event.amount is None else event.amount
    return "dispute:lost", DisputeStatus.LOST, lost


_DISPUTE_MOVES = {
    Action.DISPUTE: _opened,
    Action.DISPUTE_FUNDS_WITHDRAWN: _withdrawn,
    Action.DISPUTE_FUNDS_REINSTATED: _reinstated,
    Action.DISPUTE_CLOSED: _closed,
}
