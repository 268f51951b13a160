"""Which notifications a decision makes: one per state change, derived from before and after."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest

from domain.events import Action, PaymentEvent
from domain.notifications import Change, NotificationType, changes, message_data
from domain.outcomes import OutcomeKind
from domain.payments import Dispute, DisputeStatus, Order, Payment, PaymentState, Refund

T = NotificationType


@dataclass(frozen=True)
class Case:
    """A payment (and its order of 2000) in some state, one event, the notifications expected."""

    name: str
    state: PaymentState
    action: Action
    expected: list[tuple[T, int]]
    amount: int = 2000
    refunds: dict[str, int] = field(default_factory=dict)
    disputes: dict[str, Dispute] = field(default_factory=dict)
    event: dict[str, object] = field(default_factory=dict)


CASES = [
    Case(
        "confirming pays the order",
        PaymentState.PENDING,
        Action.CONFIRM,
        [(T.PAYMENT_CONFIRMED, 2000), (T.ORDER_PAID, 2000)],
    ),
    Case(
        "a partial payment confirms without paying the order",
        PaymentState.PENDING,
        Action.CONFIRM,
        [(T.PAYMENT_CONFIRMED, 500)],
        amount=500,
    ),
    Case("a failure", PaymentState.PENDING, Action.FAIL, [(T.PAYMENT_FAILED, 2000)]),
    Case("a cancellation", PaymentState.FAILED, Action.CANCEL, [(T.PAYMENT_CANCELED, 2000)]),
    Case(
        "a partial refund unpays the order",
        PaymentState.CONFIRMED,
        Action.REFUND,
        [(T.PAYMENT_REFUNDED, 300), (T.ORDER_UNPAID, 2000)],
        event={"amount": 300, "refund_reference": "re_1"},
    ),
    Case(
        "a second refund of an unpaid order tells only the refund",
        PaymentState.CONFIRMED,
        Action.REFUND,
        [(T.PAYMENT_REFUNDED, 700)],
        refunds={"re_1": 300},
        event={"amount": 700, "refund_reference": "re_2"},
    ),
    Case(
        "a full refund is one refund, not a state of its own",
        PaymentState.CONFIRMED,
        Action.REFUND,
        [(T.PAYMENT_REFUNDED, 2000), (T.ORDER_UNPAID, 2000)],
        event={"refund_reference": "re_1"},
    ),
    Case(
        "a reversed full refund pays the order again, told as the reversal",
        PaymentState.REFUNDED,
        Action.REFUND_FAILED,
        [(T.PAYMENT_REFUND_REVERSED, 2000), (T.ORDER_PAID, 2000)],
        refunds={"re_1": 2000},
        event={"refund_reference": "re_1"},
    ),
    Case(
        "a dispute opened moves no money",
        PaymentState.CONFIRMED,
        Action.DISPUTE,
        [(T.PAYMENT_DISPUTED, 2000)],
        event={"dispute_reference": "dp_1"},
    ),
    Case(
        "a dispute won",
        PaymentState.CONFIRMED,
        Action.DISPUTE_CLOSED,
        [(T.PAYMENT_DISPUTE_CLOSED, 2000)],
        disputes={"dp_1": Dispute(2000)},
        event={"dispute_reference": "dp_1", "dispute_won": True, "dispute_stage": 3},
    ),
    Case(
        "a dispute lost takes the money back: closed, and the order unpaid, but no refund",
        PaymentState.CONFIRMED,
        Action.DISPUTE_CLOSED,
        [(T.PAYMENT_DISPUTE_CLOSED, 2000), (T.ORDER_UNPAID, 2000)],
        disputes={"dp_1": Dispute(2000)},
        event={"dispute_reference": "dp_1", "dispute_won": False, "dispute_stage": 3},
    ),
    Case(
        "a chargeback's money withdrawn unpays the order",
        PaymentState.CONFIRMED,
        Action.DISPUTE_FUNDS_WITHDRAWN,
        [(T.PAYMENT_DISPUTED, 2000), (T.ORDER_UNPAID, 2000)],
        event={"dispute_reference": "dp_1", "dispute_stage": 2},
    ),
    Case(
        "a refund's failure that arrives before its success tells nothing",
        PaymentState.CONFIRMED,
        Action.REFUND_FAILED,
        [],
        event={"refund_reference": "re_9", "amount": 500},
    ),
    Case(
        "an authorisation is told as such and pays nothing",
        PaymentState.PENDING,
        Action.AUTHORIZE,
        [(T.PAYMENT_AUTHORIZED, 2000)],
    ),
    Case(
        "cancel-or-refund of a captured payment refunds it",
        PaymentState.CONFIRMED,
        Action.CANCEL_OR_REFUND,
        [(T.PAYMENT_REFUNDED, 2000), (T.ORDER_UNPAID, 2000)],
        event={"refund_reference": "re_1"},
    ),
]


def _setup(case: Case) -> tuple[Order, Payment]:
    order = Order(1, "order-1", 2000, "USD")
    payment = Payment(
        7,
        1,
        "stripe",
        "pi_1",
        case.amount,
        "USD",
        case.state,
        refunds={reference: Refund(amount) for reference, amount in case.refunds.items()},
        disputes=copy.deepcopy(case.disputes),
    )
    if case.state in (PaymentState.CONFIRMED, PaymentState.REFUNDED):
        order.paid_amount = case.amount
    payment.refunded_amount = order.refunded_amount = sum(case.refunds.values())
    return order, payment


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_decision_tells_each_of_its_state_changes_once(case: Case) -> None:
    order, payment = _setup(case)
    order_before, payment_before = copy.deepcopy(order), copy.deepcopy(payment)
    event = PaymentEvent("stripe", "evt_1", "test", case.action, "pi_1", **case.event)  # type: ignore[arg-type]
    outcome = payment.apply(event, order, delivery_id=1)
    assert outcome.kind is OutcomeKind.APPLIED
    found = changes(payment_before, payment, order_before, order)
    assert [(change.type, change.amount) for change in found] == case.expected


def test_a_decision_that_changes_nothing_tells_nothing() -> None:
    order, payment = _setup(Case("", PaymentState.CONFIRMED, Action.CONFIRM, []))
    order_before, payment_before = copy.deepcopy(order), copy.deepcopy(payment)
    outcome = payment.apply(
        PaymentEvent("stripe", "evt_2", "test", Action.CONFIRM, "pi_1"), order, 2
    )
    assert outcome.kind is OutcomeKind.ACKNOWLEDGED_DUPLICATE
    assert changes(payment_before, payment, order_before, order) == []


def test_an_order_change_carries_the_orders_state_and_a_payment_change_the_payments() -> None:
    order, payment = _setup(
        Case("", PaymentState.CONFIRMED, Action.REFUND, [], refunds={"re_1": 300})
    )
    order_data = message_data(
        Change(T.ORDER_UNPAID, 2000),
        order=order,
        payment=payment,
        transition="refund:partial",
        delivery_id=9,
    )
    assert order_data["state"] == "pending"
    payment_data = message_data(
        Change(T.PAYMENT_REFUNDED, 300),
        order=order,
        payment=payment,
        transition="refund:partial",
        delivery_id=9,
    )
    assert payment_data == {
        "order_reference": "order-1",
        "payment_id": 7,
        "provider": "stripe",
        "provider_reference": "pi_1",
        "state": "confirmed",
        "amount": 300,
        "refunded_amount": 300,
        "currency": "USD",
        "transition": "refund:partial",
        "delivery_id": 9,
    }


def test_a_dispute_that_closes_without_having_been_seen_open_is_told_closed() -> None:
    order, payment = _setup(Case("", PaymentState.CONFIRMED, Action.DISPUTE_CLOSED, []))
    payment_before = copy.deepcopy(payment)
    payment.disputes["dp_9"] = Dispute(2000, DisputeStatus.WON)
    assert changes(payment_before, payment, order, order) == [
        Change(T.PAYMENT_DISPUTE_CLOSED, 2000)
    ]
