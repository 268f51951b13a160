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


_OPEN = frozenset({PaymentState.CREATED, PaymentState.PENDING, PaymentState.FAILED})
# Stripe lets a PaymentIntent succeed after a failed attempt, so `failed` is not final.
_CONFIRMABLE = _OPEN


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
    refunds: dict[str, int] = field(default_factory=dict)

    def apply(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        """Decide what `event` does to this payment (and its order), and do it."""
        if event.action is Action.CONFIRM:
            return self._confirm(event, order, delivery_id)
        if event.action is Action.FAIL:
            return self._close(PaymentState.FAILED)
        if event.action is Action.CANCEL:
            return self._close(PaymentState.CANCELED)
        if event.action is Action.REFUND:
            return self._refund(event, order)
        return Outcome.ignored(Reason.UNSUPPORTED_EVENT, self.id)

    def confirm_manually(self, order: Order) -> Outcome:
        """A confirmation by an operator or the host application, not by a provider."""
        if self.state is not PaymentState.CONFIRMED and self.state not in _CONFIRMABLE:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        return self._move_to_confirmed(order, None)

    def _confirm(self, event: PaymentEvent, order: Order, delivery_id: int) -> Outcome:
        if event.currency is not None and event.currency != self.currency:
            return Outcome.rejected(Reason.CURRENCY_MISMATCH, self.id)
        if event.amount is not None and event.amount != self.amount:
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        if self.state is PaymentState.CONFIRMED:
            return Outcome.already_in_state(self.id, self.confirmed_by)
        if self.state is PaymentState.REFUNDED:
            return Outcome.ignored(Reason.STALE, self.id)
        if self.state not in _CONFIRMABLE:
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

    def _refund(self, event: PaymentEvent, order: Order) -> Outcome:
        if self.state in _OPEN:
            # The confirmation is probably still on its way: wait for it.
            return Outcome.deferred(Reason.AWAITING_CONFIRMATION, self.id)
        if self.state is PaymentState.CANCELED:
            return Outcome.rejected(Reason.INVALID_TRANSITION, self.id)
        if event.currency is not None and event.currency != self.currency:
            return Outcome.rejected(Reason.CURRENCY_MISMATCH, self.id)
        reference = event.refund_reference or event.event_id
        if reference in self.refunds:
            return Outcome.already_in_state(self.id, None)
        amount = self.amount - self.refunded_amount if event.amount is None else event.amount
        if amount <= 0 or self.refunded_amount + amount > self.amount:
            return Outcome.rejected(Reason.AMOUNT_MISMATCH, self.id)
        before = self.state
        self.refunds[reference] = amount
        self.refunded_amount += amount
        order.refunded_amount += amount
        if self.refunded_amount == self.amount:
            self.state = PaymentState.REFUNDED
        return Outcome.applied(f"{before}->{self.state}", self.id)
