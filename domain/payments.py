"""Orders and payments as a state machine; every event gets a decision, never an exception."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from domain.events import Action, PaymentEvent
from domain.outcomes import Outcome, Reason


class PaymentState(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"


class DisputeStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


# Stripe lets a PaymentIntent succeed after a failed attempt, so `failed` is not final.
_OPEN = frozenset({PaymentState.CREATED, PaymentState.PENDING, PaymentState.FAILED})
_SETTLED = frozenset({PaymentState.CONFIRMED, PaymentState.REFUNDED})
# Only these events consult a payment's earlier refunds and disputes.
_WITH_HISTORY = frozenset(
    {
        Action.REFUND,
        Action.REFUND_FAILED,
        Action.CANCEL_OR_REFUND,
        Action.DISPUTE,
        Action.DISPUTE_CLOSED,
    }
)


def needs_history(action: Action) -> bool:
    """Whether deciding `action` needs the payment's refunds and disputes."""
    return action in _WITH_HISTORY


@dataclass(slots=True)
class Order:
    """An order is paid once confirmed payments minus refunds reach its total."""

    id: int
    reference: str
    total: int
    currency: str
    paid_amount: int = 0
    refunded_amount: int = 0

    @property
    def net_paid(self) -> int:
        return self.paid_amount - self.refunded_amount

    @property
    def status(self) -> OrderStatus:
        return OrderStatus.PAID if self.net_paid >= self.total else OrderStatus.PENDING

    @property
    def overpaid_amount(self) -> int:
        return max(0, self.net_paid - self.total)


@dataclass(slots=True)
class Dispute:
    amount: int
    status: DisputeStatus = DisputeStatus.OPEN


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
    refunds: dict[str, int] = field(default_factory=dict)  # refund reference -> amount
    disputes: dict[str, Dispute] = field(default_factory=dict)

    def apply(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        """Decide what `event` does to this payment (and its order), and do it."""
        if event.currency is not None and event.currency != self.currency:
            return Outcome.rejected(Reason.CURRENCY_MISMATCH, self.id)
        match event.action:
            case Action.CONFIRM:
                return self._confirm(event, order, delivery_id)
            case Action.FAIL:
                return self._close(PaymentState.FAILED)
            case Action.CANCEL:
                return self._close(PaymentState.CANCELED)
            case Action.REFUND:
                return self._refund(event.refund_reference or event.event_id, event.amount, order)
            case Action.REFUND_FAILED:
                return self._reverse_refund(event.refund_reference or "", order)
            case Action.CANCEL_OR_REFUND:
                if self.state in _OPEN:
                    return self._close(PaymentState.CANCELED)
                return self._refund(event.refund_reference or event.event_id, None, order)
            case Action.DISPUTE:
                return self._open_dispute(event)
            case Action.DISPUTE_CLOSED:
                return self._close_dispute(event, order)
        return Outcome.ignored(Reason.UNSUPPORTED_EVENT, self.id)

    def confirm_manually(self, order: Order) -> Outcome:
        """A confirmation by an operator or the host application, not by a provider."""
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        if self.state not in _OPEN:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        return self._move_to_confirmed(order, None)

    def _confirm(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        if event.amount is not None and event.amount != self.amount:
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        if self.state is PaymentState.REFUNDED:
            return Outcome.ignored(Reason.STALE, self.id)
        if self.state not in _OPEN:
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
        if self.state not in _OPEN:
            # A failure or cancellation that arrives after the payment settled changes nothing.
            return Outcome.ignored(Reason.STALE, self.id)
        transition = f"{self.state}->{target}"
        self.state = target
        return Outcome.applied(transition, self.id)

    def _refund(self, reference: str, amount: int | None, order: Order) -> Outcome:
        if self.state in _OPEN:
            # The confirmation is probably still on its way: wait for it.
            return Outcome.deferred(Reason.AWAITING_CONFIRMATION, self.id)
        if self.state is PaymentState.CANCELED:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        if reference in self.refunds:
            return Outcome.already_in_state(self.id, None)
        remaining = self.amount - self.refunded_amount
        if amount is None:
            amount = remaining
        if amount <= 0 or amount > remaining:
            if remaining == 0 and self.state is PaymentState.REFUNDED:
                return Outcome.already_in_state(self.id, None)
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        before = self.state
        self.refunds[reference] = amount
        self.refunded_amount += amount
        order.refunded_amount += amount
        if self.refunded_amount == self.amount:
            self.state = PaymentState.REFUNDED
        transition = "refund:partial" if before is self.state else f"{before}->{self.state}"
        return Outcome.applied(transition, self.id)

    def _reverse_refund(self, reference: str, order: Order) -> Outcome:
        amount = self.refunds.pop(reference, None)
        if amount is None:
            return Outcome.ignored(Reason.STALE, self.id)
        before = self.state
        self.refunded_amount -= amount
        order.refunded_amount -= amount
        if self.state is PaymentState.REFUNDED:
            self.state = PaymentState.CONFIRMED
        transition = "refund:reversed" if before is self.state else f"{before}->{self.state}"
        return Outcome.applied(transition, self.id)

    def _open_dispute(self, event: PaymentEvent) -> Outcome:
        reference = event.dispute_reference or event.event_id
        if reference in self.disputes:
            return Outcome.already_in_state(self.id, None)
        if self.state not in _SETTLED:
            return Outcome.deferred(Reason.AWAITING_CONFIRMATION, self.id)
        amount = self.amount if event.amount is None else event.amount
        self.disputes[reference] = Dispute(amount)
        return Outcome.applied("dispute:opened", self.id)

    def _close_dispute(self, event: PaymentEvent, order: Order) -> Outcome:
        reference = event.dispute_reference or event.event_id
        dispute = self.disputes.get(reference)
        if dispute is None:
            if self.state not in _SETTLED:
                return Outcome.deferred(Reason.AWAITING_CONFIRMATION, self.id)
            dispute = self.disputes[reference] = Dispute(
                self.amount if event.amount is None else event.amount
            )
        if dispute.status is not DisputeStatus.OPEN:
            return Outcome.already_in_state(self.id, None)
        if event.dispute_won:
            dispute.status = DisputeStatus.WON
            return Outcome.applied("dispute:won", self.id)
        dispute.status = DisputeStatus.LOST
        # A lost dispute takes the money back, like a refund the merchant did not choose.
        amount = min(dispute.amount, self.amount - self.refunded_amount)
        if amount > 0:
            self.refunds[f"dispute:{reference}"] = amount
            self.refunded_amount += amount
            order.refunded_amount += amount
            if self.refunded_amount == self.amount:
                self.state = PaymentState.REFUNDED
        return Outcome.applied("dispute:lost", self.id)
