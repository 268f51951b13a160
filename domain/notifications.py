"""What the host is told: one notification per state change, derived from before and after.

The domain decides; this module only compares the payment and its order as they were before the
decision with what the decision made of them. A new kind of change (a new state, a new kind of
money movement) is one more comparison here, and nothing else learns of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.payments import DisputeStatus, Order, OrderStatus, Payment, PaymentState, RefundStatus


class NotificationType(StrEnum):
    PAYMENT_AUTHORIZED = "payment.authorized"
    PAYMENT_CONFIRMED = "payment.confirmed"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_CANCELED = "payment.canceled"
    PAYMENT_REFUNDED = "payment.refunded"
    PAYMENT_REFUND_REVERSED = "payment.refund_reversed"
    PAYMENT_DISPUTED = "payment.disputed"
    PAYMENT_DISPUTE_CLOSED = "payment.dispute_closed"
    ORDER_PAID = "order.paid"
    ORDER_UNPAID = "order.unpaid"


# The payment states a host hears of as such; `refunded` is told by its refunds instead.
_STATE_TYPES = {
    PaymentState.AUTHORIZED.value: NotificationType.PAYMENT_AUTHORIZED,
    PaymentState.CONFIRMED.value: NotificationType.PAYMENT_CONFIRMED,
    PaymentState.FAILED.value: NotificationType.PAYMENT_FAILED,
    PaymentState.CANCELED.value: NotificationType.PAYMENT_CANCELED,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One state change worth a notification; `amount` is the money it is about."""

    type: NotificationType
    amount: int

    @property
    def about_order(self) -> bool:
        return self.type in (NotificationType.ORDER_PAID, NotificationType.ORDER_UNPAID)


def changes(
    before: Payment, after: Payment, order_before: Order, order_after: Order
) -> list[Change]:
    """Every change from `before` to `after`, payment changes first, then the order's."""
    found: list[Change] = []
    added = _refunds(after, before)
    removed = _refunds(before, after)
    # A state reached through refunds (refunded, or confirmed again after a reversal) is told by
    # the refunds; any other new state is told as itself.
    if after.state is not before.state and not (added or removed or _disputes_moved(before, after)):
        state_type = _STATE_TYPES.get(after.state.value)
        if state_type is not None:
            found.append(Change(state_type, after.amount))
    found += [Change(NotificationType.PAYMENT_REFUNDED, amount) for amount in added.values()]
    found += [
        Change(NotificationType.PAYMENT_REFUND_REVERSED, amount) for amount in removed.values()
    ]
    for reference, dispute in after.disputes.items():
        earlier = before.disputes.get(reference)
        if earlier is None and dispute.status is DisputeStatus.OPEN:
            found.append(Change(NotificationType.PAYMENT_DISPUTED, dispute.amount))
        elif dispute.status is not DisputeStatus.OPEN and (
            earlier is None or earlier.status is DisputeStatus.OPEN
        ):
            found.append(Change(NotificationType.PAYMENT_DISPUTE_CLOSED, dispute.amount))
    if order_before.status is not order_after.status:
        paid = order_after.status is OrderStatus.PAID
        found.append(
            Change(
                NotificationType.ORDER_PAID if paid else NotificationType.ORDER_UNPAID,
                order_after.total,
            )
        )
    return found


def message_data(
    change: Change,
    *,
    order: Order,
    payment: Payment,
    transition: str | None,
    delivery_id: int | None,
) -> dict[str, Any]:
    """The notification's `data`, less `order_sequence` (given by the outbox as it commits).

    For an order's change, `state` and `refunded_amount` are the order's; for a payment's, the
    payment's. `amount` is the change's: the payment's amount, a refund's, a dispute's, or the
    order's total.
    """
    if change.about_order:
        state, refunded = order.status.value, order.refunded_amount
    else:
        state, refunded = payment.state.value, payment.refunded_amount
    return {
        "order_reference": order.reference,
        "payment_id": payment.id,
        "provider": payment.provider,
        "provider_reference": payment.provider_reference,
        "state": state,
        "amount": change.amount,
        "refunded_amount": refunded,
        "currency": payment.currency,
        "transition": transition,
        "delivery_id": delivery_id,
    }


def _refunds(having: Payment, lacking: Payment) -> dict[str, int]:
    """The refunds that went through in `having` and not (or not yet, or no longer) in
    `lacking`. A failure recorded before its success is kept as a failed refund: never told."""

    def succeeded(payment: Payment, reference: str) -> bool:
        refund = payment.refunds.get(reference)
        return refund is not None and refund.status is RefundStatus.SUCCEEDED

    return {
        reference: refund.amount
        for reference, refund in having.refunds.items()
        if succeeded(having, reference) and not succeeded(lacking, reference)
    }


def _disputes_moved(before: Payment, after: Payment) -> bool:
    return any(
        before.disputes.get(reference) != dispute for reference, dispute in after.disputes.items()
    )
