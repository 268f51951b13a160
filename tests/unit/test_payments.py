"""The payment state machine and money rules: every event gets a decision, never an exception."""

import pytest

from domain.events import Action, PaymentEvent
from domain.money import InvalidCurrency, exponent, normalize_currency
from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.payments import Order, OrderStatus, Payment, PaymentState, Refund, RefundStatus

FIRST_DELIVERY = 101
LATER_DELIVERY = 202


def order(total: int = 2000, currency: str = "USD") -> Order:
    return Order(id=1, reference="order-1", total=total, currency=currency)


def payment(
    amount: int = 2000,
    currency: str = "USD",
    state: PaymentState = PaymentState.PENDING,
    payment_id: int = 7,
) -> Payment:
    return Payment(
        id=payment_id,
        order_id=1,
        provider="stripe",
        provider_reference=f"pi_{payment_id}",
        amount=amount,
        currency=currency,
        state=state,
    )


def event(
    action: Action,
    amount: int | None = 2000,
    currency: str | None = "USD",
    refund_reference: str | None = None,
    event_id: str = "evt_1",
) -> PaymentEvent:
    return PaymentEvent(
        provider="stripe",
        event_id=event_id,
        event_type=f"test.{action}",
        action=action,
        payment_reference="pi_7",
        amount=amount,
        currency=currency,
        refund_reference=refund_reference,
    )


def refund(amount: int | None, reference: str, currency: str = "USD") -> PaymentEvent:
    return event(Action.REFUND, amount, currency, refund_reference=reference)


def confirmed(the_order: Order, amount: int = 2000) -> Payment:
    paid = payment(amount)
    assert paid.apply(event(Action.CONFIRM, amount), the_order, FIRST_DELIVERY).kind == "applied"
    return paid


# --- confirmation -------------------------------------------------------------------------


def test_confirming_a_pending_payment_applies_and_pays_the_order() -> None:
    the_order, the_payment = order(), payment()

    outcome = the_payment.apply(event(Action.CONFIRM), the_order, FIRST_DELIVERY)

    assert outcome == Outcome.applied("pending->confirmed", the_payment.id)
    assert the_payment.state is PaymentState.CONFIRMED
    assert the_payment.confirmed_by == FIRST_DELIVERY
    assert the_order.paid_amount == 2000
    assert the_order.status is OrderStatus.PAID
    assert the_order.overpaid_amount == 0


def test_confirming_a_created_payment_applies() -> None:
    the_payment = payment(state=PaymentState.CREATED)
    outcome = the_payment.apply(event(Action.CONFIRM), order(), FIRST_DELIVERY)
    assert outcome.transition == "created->confirmed"


def test_a_partial_payment_leaves_the_order_pending() -> None:
    the_order = order(total=3000)
    confirmed(the_order, amount=2000)
    assert the_order.paid_amount == 2000
    assert the_order.status is OrderStatus.PENDING


def test_the_order_is_paid_once_confirmed_payments_reach_its_total() -> None:
    the_order = order(total=3000)
    first, second = payment(2000, payment_id=1), payment(1000, payment_id=2)
    first.apply(event(Action.CONFIRM, 2000), the_order, FIRST_DELIVERY)
    assert the_order.status is OrderStatus.PENDING

    second.apply(event(Action.CONFIRM, 1000), the_order, LATER_DELIVERY)

    assert the_order.paid_amount == 3000
    assert the_order.status is OrderStatus.PAID
    assert the_order.overpaid_amount == 0


def test_paying_more_than_the_total_is_recorded_as_overpaid() -> None:
    the_order = order(total=1000)
    first, second = payment(600, payment_id=1), payment(600, payment_id=2)
    first.apply(event(Action.CONFIRM, 600), the_order, FIRST_DELIVERY)
    second.apply(event(Action.CONFIRM, 600), the_order, LATER_DELIVERY)

    assert the_order.status is OrderStatus.PAID
    assert the_order.paid_amount == 1200
    assert the_order.overpaid_amount == 200


def test_confirming_a_confirmed_payment_is_a_duplicate_of_the_confirming_delivery() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    outcome = the_payment.apply(event(Action.CONFIRM), the_order, LATER_DELIVERY)

    assert outcome.kind is OutcomeKind.ACKNOWLEDGED_DUPLICATE
    assert outcome.reason is Reason.ALREADY_IN_STATE
    assert outcome.duplicate_of == FIRST_DELIVERY
    assert outcome.payment_id == the_payment.id
    assert the_payment.confirmed_by == FIRST_DELIVERY
    assert the_order.paid_amount == 2000  # counted once


def test_confirmation_with_another_amount_is_rejected_and_changes_nothing() -> None:
    the_order, the_payment = order(), payment()

    outcome = the_payment.apply(event(Action.CONFIRM, amount=1999), the_order, FIRST_DELIVERY)

    assert outcome == Outcome.rejected(Reason.AMOUNT_MISMATCH, the_payment.id)
    assert the_payment.state is PaymentState.PENDING
    assert the_order.paid_amount == 0


def test_confirmation_in_another_currency_is_rejected_and_changes_nothing() -> None:
    the_order, the_payment = order(), payment()

    outcome = the_payment.apply(event(Action.CONFIRM, currency="EUR"), the_order, FIRST_DELIVERY)

    assert outcome == Outcome.rejected(Reason.CURRENCY_MISMATCH, the_payment.id)
    assert the_payment.state is PaymentState.PENDING
    assert the_order.paid_amount == 0


def test_confirmation_without_amount_or_currency_is_taken_at_the_payment_amount() -> None:
    the_order, the_payment = order(), payment()
    outcome = the_payment.apply(event(Action.CONFIRM, None, None), the_order, FIRST_DELIVERY)
    assert outcome.kind is OutcomeKind.APPLIED
    assert the_order.paid_amount == 2000


def test_confirmation_after_a_failure_is_applied() -> None:
    the_order, the_payment = order(), payment()
    the_payment.apply(event(Action.FAIL, None), the_order, FIRST_DELIVERY)

    outcome = the_payment.apply(event(Action.CONFIRM), the_order, LATER_DELIVERY)

    assert outcome.transition == "failed->confirmed"
    assert the_payment.state is PaymentState.CONFIRMED
    assert the_order.status is OrderStatus.PAID


def test_confirmation_of_a_canceled_payment_is_an_invalid_transition() -> None:
    the_order, the_payment = order(), payment(state=PaymentState.CANCELED)
    outcome = the_payment.apply(event(Action.CONFIRM), the_order, FIRST_DELIVERY)
    assert outcome == Outcome.rejected(Reason.INVALID_TRANSITION, the_payment.id)
    assert the_order.paid_amount == 0


def test_confirmation_of_a_refunded_payment_is_stale() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(2000, "re_1"), the_order, LATER_DELIVERY)

    outcome = the_payment.apply(event(Action.CONFIRM), the_order, LATER_DELIVERY + 1)

    assert outcome == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.state is PaymentState.REFUNDED
    assert the_order.paid_amount == 2000


# --- failure and cancellation --------------------------------------------------------------


def test_failure_of_a_pending_payment_is_applied() -> None:
    the_payment = payment()
    outcome = the_payment.apply(event(Action.FAIL, None), order(), FIRST_DELIVERY)
    assert outcome == Outcome.applied("pending->failed", the_payment.id)
    assert the_payment.state is PaymentState.FAILED


def test_failure_after_confirmation_is_ignored_as_stale() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    outcome = the_payment.apply(event(Action.FAIL, None), the_order, LATER_DELIVERY)

    assert outcome == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.state is PaymentState.CONFIRMED
    assert the_order.status is OrderStatus.PAID


def test_a_second_failure_is_already_in_state() -> None:
    the_payment = payment(state=PaymentState.FAILED)
    outcome = the_payment.apply(event(Action.FAIL, None), order(), LATER_DELIVERY)
    assert outcome.kind is OutcomeKind.ACKNOWLEDGED_DUPLICATE
    assert outcome.reason is Reason.ALREADY_IN_STATE


def test_cancellation_of_a_pending_payment_is_applied() -> None:
    the_payment = payment()
    outcome = the_payment.apply(event(Action.CANCEL, None), order(), FIRST_DELIVERY)
    assert outcome == Outcome.applied("pending->canceled", the_payment.id)
    assert the_payment.state is PaymentState.CANCELED


def test_cancellation_of_a_failed_payment_is_applied() -> None:
    the_payment = payment(state=PaymentState.FAILED)
    outcome = the_payment.apply(event(Action.CANCEL, None), order(), FIRST_DELIVERY)
    assert outcome.transition == "failed->canceled"


def test_cancellation_after_confirmation_is_ignored_as_stale() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.apply(event(Action.CANCEL, None), the_order, LATER_DELIVERY)
    assert outcome == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.state is PaymentState.CONFIRMED


def test_a_second_cancellation_is_already_in_state() -> None:
    the_payment = payment(state=PaymentState.CANCELED)
    outcome = the_payment.apply(event(Action.CANCEL, None), order(), LATER_DELIVERY)
    assert outcome.reason is Reason.ALREADY_IN_STATE


def test_failure_after_cancellation_is_stale() -> None:
    the_payment = payment(state=PaymentState.CANCELED)
    outcome = the_payment.apply(event(Action.FAIL, None), order(), LATER_DELIVERY)
    assert outcome == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.state is PaymentState.CANCELED


def test_an_unsupported_action_is_ignored() -> None:
    the_payment = payment()
    outcome = the_payment.apply(event(Action.UNSUPPORTED), order(), FIRST_DELIVERY)
    assert outcome == Outcome.ignored(Reason.UNSUPPORTED_EVENT, the_payment.id)
    assert the_payment.state is PaymentState.PENDING


# --- refunds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [PaymentState.CREATED, PaymentState.PENDING, PaymentState.AUTHORIZED, PaymentState.FAILED],
)
def test_refund_before_capture_waits_for_the_capture(state: PaymentState) -> None:
    the_order, the_payment = order(), payment(state=state)

    outcome = the_payment.apply(refund(500, "re_1"), the_order, FIRST_DELIVERY)

    assert outcome == Outcome.deferred(Reason.AWAITING_STATE, the_payment.id)
    assert outcome.is_deferred
    assert the_payment.state is state
    assert the_payment.refunds == {}
    assert the_order.refunded_amount == 0


def test_an_event_still_awaiting_its_state_after_the_wait_is_unmatched_not_rejected() -> None:
    deferred = Outcome.awaiting_state(7)
    assert deferred.expire() == Outcome(OutcomeKind.UNMATCHED, Reason.AWAITING_STATE, None, 7)


def test_an_event_for_no_payment_after_the_grace_is_unmatched() -> None:
    expired = Outcome.deferred(Reason.NO_PAYMENT).expire()
    assert expired.kind is OutcomeKind.UNMATCHED
    assert expired.reason is Reason.NO_PAYMENT
    assert not expired.is_deferred


def test_partial_refunds_add_up_to_a_full_refund() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    first = the_payment.apply(refund(500, "re_1"), the_order, LATER_DELIVERY)
    assert first == Outcome.applied("refund:partial", the_payment.id)
    assert the_payment.state is PaymentState.CONFIRMED
    assert the_payment.refunded_amount == 500
    assert the_order.refunded_amount == 500
    assert the_order.status is OrderStatus.PENDING  # 2000 paid - 500 refunded < 2000

    second = the_payment.apply(refund(1500, "re_2"), the_order, LATER_DELIVERY + 1)
    assert second == Outcome.applied("confirmed->refunded", the_payment.id)
    assert the_payment.state is PaymentState.REFUNDED
    assert the_payment.refunded_amount == 2000
    assert the_payment.refunds == {"re_1": Refund(500), "re_2": Refund(1500)}
    assert the_order.refunded_amount == 2000
    assert the_order.net_paid == 0


def test_a_full_refund_moves_the_payment_to_refunded() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    outcome = the_payment.apply(refund(2000, "re_1"), the_order, LATER_DELIVERY)

    assert outcome == Outcome.applied("confirmed->refunded", the_payment.id)
    assert the_payment.state is PaymentState.REFUNDED
    assert the_order.status is OrderStatus.PENDING


def test_a_refund_without_an_amount_refunds_what_is_left() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(500, "re_1"), the_order, LATER_DELIVERY)

    outcome = the_payment.apply(refund(None, "re_2"), the_order, LATER_DELIVERY + 1)

    assert outcome.transition == "confirmed->refunded"
    assert the_payment.refunds == {"re_1": Refund(500), "re_2": Refund(1500)}


def test_refunding_more_than_was_paid_is_rejected() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(1500, "re_1"), the_order, LATER_DELIVERY)

    outcome = the_payment.apply(refund(501, "re_2"), the_order, LATER_DELIVERY + 1)

    assert outcome == Outcome.rejected(Reason.AMOUNT_MISMATCH, the_payment.id)
    assert the_payment.refunded_amount == 1500
    assert the_order.refunded_amount == 1500
    assert the_payment.state is PaymentState.CONFIRMED


def test_another_refund_of_a_fully_refunded_payment_is_already_in_state() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(2000, "re_1"), the_order, LATER_DELIVERY)

    outcome = the_payment.apply(refund(1, "re_2"), the_order, LATER_DELIVERY + 1)

    assert outcome == Outcome.already_in_state(the_payment.id, None)
    assert the_payment.refunds == {"re_1": Refund(2000)}
    assert the_order.refunded_amount == 2000


def test_the_same_refund_reference_twice_is_already_in_state() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(500, "re_1"), the_order, LATER_DELIVERY)

    outcome = the_payment.apply(refund(500, "re_1"), the_order, LATER_DELIVERY + 1)

    assert outcome.kind is OutcomeKind.ACKNOWLEDGED_DUPLICATE
    assert outcome.reason is Reason.ALREADY_IN_STATE
    assert the_payment.refunded_amount == 500
    assert the_order.refunded_amount == 500


def test_a_refund_in_another_currency_is_rejected() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.apply(refund(500, "re_1", currency="EUR"), the_order, LATER_DELIVERY)
    assert outcome == Outcome.rejected(Reason.CURRENCY_MISMATCH, the_payment.id)
    assert the_payment.refunded_amount == 0


def test_a_refund_of_a_canceled_payment_is_an_invalid_transition() -> None:
    the_payment = payment(state=PaymentState.CANCELED)
    outcome = the_payment.apply(refund(500, "re_1"), order(), LATER_DELIVERY)
    assert outcome == Outcome.rejected(Reason.INVALID_TRANSITION, the_payment.id)


def test_a_refund_failure_before_its_success_keeps_the_success_from_applying() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    failed = event(Action.REFUND_FAILED, 500, refund_reference="re_1", event_id="evt_f")

    first = the_payment.apply(failed, the_order, LATER_DELIVERY)
    late_success = the_payment.apply(refund(500, "re_1"), the_order, LATER_DELIVERY + 1)

    assert first == Outcome.applied("refund:failed", the_payment.id)
    assert late_success == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.refunds == {"re_1": Refund(500, RefundStatus.FAILED)}
    assert (the_payment.refunded_amount, the_order.refunded_amount) == (0, 0)
    assert the_order.status is OrderStatus.PAID


def test_a_refund_that_fails_after_its_success_gives_the_money_back() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(2000, "re_1"), the_order, LATER_DELIVERY)
    failed = event(Action.REFUND_FAILED, 2000, refund_reference="re_1", event_id="evt_f")

    outcome = the_payment.apply(failed, the_order, LATER_DELIVERY + 1)

    assert outcome == Outcome.applied("refunded->confirmed", the_payment.id)
    assert (the_payment.refunded_amount, the_order.refunded_amount) == (0, 0)
    assert the_order.status is OrderStatus.PAID


# --- authorisation and capture -------------------------------------------------------------


def test_an_authorisation_holds_money_and_pays_nothing() -> None:
    the_order, the_payment = order(), payment()

    outcome = the_payment.apply(event(Action.AUTHORIZE), the_order, FIRST_DELIVERY)

    assert outcome == Outcome.applied("pending->authorized", the_payment.id)
    assert the_payment.state is PaymentState.AUTHORIZED
    assert the_order.paid_amount == 0
    assert the_order.status is OrderStatus.PENDING


def test_the_capture_of_an_authorisation_pays_the_order() -> None:
    the_order, the_payment = order(), payment()
    the_payment.apply(event(Action.AUTHORIZE), the_order, FIRST_DELIVERY)

    outcome = the_payment.apply(event(Action.CONFIRM), the_order, LATER_DELIVERY)

    assert outcome == Outcome.applied("authorized->confirmed", the_payment.id)
    assert the_order.status is OrderStatus.PAID
    assert the_payment.confirmed_by == LATER_DELIVERY


@pytest.mark.parametrize("first", [Action.AUTHORIZE, Action.CANCEL])
def test_an_authorisation_and_its_void_cancel_the_payment_in_either_order(first: Action) -> None:
    the_order, the_payment = order(), payment()
    second = Action.CANCEL if first is Action.AUTHORIZE else Action.AUTHORIZE

    the_payment.apply(event(first), the_order, FIRST_DELIVERY)
    the_payment.apply(event(second), the_order, LATER_DELIVERY)

    assert the_payment.state is PaymentState.CANCELED
    assert the_order.paid_amount == 0


def test_an_authorisation_after_the_capture_is_already_in_state() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.apply(event(Action.AUTHORIZE), the_order, LATER_DELIVERY)
    assert outcome == Outcome.already_in_state(the_payment.id, None)
    assert the_payment.state is PaymentState.CONFIRMED


def test_a_failed_attempt_beside_an_authorisation_leaves_it_authorized() -> None:
    the_order, the_payment = order(), payment()
    the_payment.apply(event(Action.AUTHORIZE), the_order, FIRST_DELIVERY)
    outcome = the_payment.apply(event(Action.FAIL), the_order, LATER_DELIVERY)
    assert outcome == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_payment.state is PaymentState.AUTHORIZED


def test_a_failed_capture_before_its_authorisation_waits_for_it() -> None:
    the_order, the_payment = order(), payment()
    outcome = the_payment.apply(event(Action.CAPTURE_FAILED), the_order, FIRST_DELIVERY)
    assert outcome == Outcome.awaiting_state(the_payment.id)
    assert the_payment.state is PaymentState.PENDING


def test_a_failed_capture_of_a_payment_counted_as_captured_takes_the_money_back() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    outcome = the_payment.apply(event(Action.CAPTURE_FAILED), the_order, LATER_DELIVERY)

    assert outcome == Outcome.applied("confirmed->failed", the_payment.id)
    assert the_order.paid_amount == 0
    assert the_order.status is OrderStatus.PENDING


def test_manual_confirmation_captures_an_authorized_payment() -> None:
    the_order, the_payment = order(), payment(state=PaymentState.AUTHORIZED)
    outcome = the_payment.confirm_manually(the_order)
    assert outcome == Outcome.applied("authorized->confirmed", the_payment.id)
    assert the_order.status is OrderStatus.PAID


# --- disputes ------------------------------------------------------------------------------


def dispute_event(action: Action, stage: int, won: bool | None = None) -> PaymentEvent:
    return PaymentEvent(
        provider="adyen",
        event_id=f"psp_dp:{action}",
        event_type=f"test.{action}",
        action=action,
        payment_reference="pi_7",
        amount=2000,
        currency="USD",
        dispute_reference="dp_1",
        dispute_stage=stage,
        dispute_won=won,
    )


def test_a_dispute_opened_moves_no_money() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.apply(dispute_event(Action.DISPUTE, 1), the_order, LATER_DELIVERY)
    assert outcome == Outcome.applied("dispute:opened", the_payment.id)
    assert the_order.status is OrderStatus.PAID


def test_a_chargeback_takes_the_money_and_its_reversal_gives_it_back() -> None:
    the_order = order()
    the_payment = confirmed(the_order)

    taken = the_payment.apply(
        dispute_event(Action.DISPUTE_FUNDS_WITHDRAWN, 2), the_order, LATER_DELIVERY
    )
    assert taken == Outcome.applied("dispute:funds_withdrawn", the_payment.id)
    assert (the_payment.disputed_amount, the_order.disputed_amount) == (2000, 2000)
    assert the_order.status is OrderStatus.PENDING

    back = the_payment.apply(
        dispute_event(Action.DISPUTE_FUNDS_REINSTATED, 3), the_order, LATER_DELIVERY + 1
    )
    assert back == Outcome.applied("dispute:funds_reinstated", the_payment.id)
    assert (the_payment.disputed_amount, the_order.disputed_amount) == (0, 0)
    assert the_order.status is OrderStatus.PAID


def test_a_chargeback_delivered_after_its_reversal_is_stale() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(dispute_event(Action.DISPUTE_FUNDS_REINSTATED, 3), the_order, LATER_DELIVERY)

    late = the_payment.apply(
        dispute_event(Action.DISPUTE_FUNDS_WITHDRAWN, 2), the_order, LATER_DELIVERY + 1
    )

    assert late == Outcome.ignored(Reason.STALE, the_payment.id)
    assert the_order.disputed_amount == 0
    assert the_order.status is OrderStatus.PAID


def test_a_lost_dispute_keeps_the_money_lost() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.apply(
        dispute_event(Action.DISPUTE_CLOSED, 4, won=False), the_order, LATER_DELIVERY
    )
    assert outcome == Outcome.applied("dispute:lost", the_payment.id)
    assert the_order.disputed_amount == 2000
    assert the_payment.state is PaymentState.CONFIRMED  # not refunded: taken by the dispute


def test_a_dispute_never_takes_more_than_is_left_after_refunds() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    the_payment.apply(refund(1500, "re_1"), the_order, LATER_DELIVERY)
    the_payment.apply(dispute_event(Action.DISPUTE_FUNDS_WITHDRAWN, 2), the_order, LATER_DELIVERY)
    assert the_payment.disputed_amount == 500
    assert the_order.net_paid == 0


def test_a_dispute_of_an_uncaptured_payment_waits_for_the_capture() -> None:
    the_order, the_payment = order(), payment(state=PaymentState.AUTHORIZED)
    outcome = the_payment.apply(
        dispute_event(Action.DISPUTE_FUNDS_WITHDRAWN, 2), the_order, FIRST_DELIVERY
    )
    assert outcome == Outcome.awaiting_state(the_payment.id)
    assert the_payment.disputes == {}


# --- manual confirmation -------------------------------------------------------------------


def test_manual_confirmation_applies_without_a_delivery() -> None:
    the_order, the_payment = order(), payment()

    outcome = the_payment.confirm_manually(the_order)

    assert outcome == Outcome.applied("pending->confirmed", the_payment.id)
    assert the_payment.state is PaymentState.CONFIRMED
    assert the_payment.confirmed_by is None
    assert the_order.status is OrderStatus.PAID


def test_a_second_manual_confirmation_is_already_in_state() -> None:
    the_order, the_payment = order(), payment()
    the_payment.confirm_manually(the_order)

    outcome = the_payment.confirm_manually(the_order)

    assert outcome == Outcome.already_in_state(the_payment.id, None)
    assert the_order.paid_amount == 2000


def test_manual_confirmation_of_a_webhook_confirmed_payment_points_at_the_delivery() -> None:
    the_order = order()
    the_payment = confirmed(the_order)
    outcome = the_payment.confirm_manually(the_order)
    assert outcome == Outcome.already_in_state(the_payment.id, FIRST_DELIVERY)


def test_a_webhook_after_a_manual_confirmation_is_already_in_state() -> None:
    the_order, the_payment = order(), payment()
    the_payment.confirm_manually(the_order)
    outcome = the_payment.apply(event(Action.CONFIRM), the_order, FIRST_DELIVERY)
    assert outcome == Outcome.already_in_state(the_payment.id, None)
    assert the_order.paid_amount == 2000


@pytest.mark.parametrize("state", [PaymentState.CANCELED, PaymentState.REFUNDED])
def test_manual_confirmation_of_a_closed_payment_is_an_invalid_transition(
    state: PaymentState,
) -> None:
    the_order, the_payment = order(), payment(state=state)
    outcome = the_payment.confirm_manually(the_order)
    assert outcome == Outcome.rejected(Reason.INVALID_TRANSITION, the_payment.id)
    assert the_order.paid_amount == 0


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["usd", "USD", " Usd "])
def test_currency_codes_are_normalized_to_upper_case(code: str) -> None:
    assert normalize_currency(code) == "USD"


@pytest.mark.parametrize(
    ("currency", "decimals"),
    [("JPY", 0), ("jpy", 0), ("KWD", 3), ("EUR", 2), ("USD", 2), ("CLF", 4)],
)
def test_minor_unit_exponent_follows_iso_4217(currency: str, decimals: int) -> None:
    assert exponent(currency) == decimals


@pytest.mark.parametrize(
    "code",
    ["", "US", "USDD", "U1D", "€UR", "12", "u\u017fd", "\u00dfd", "\u0131NR"],
    ids=["empty", "two", "four", "digit", "euro-sign", "digits", "long-s", "sharp-s", "dotless-i"],
)
def test_a_code_that_is_not_three_letters_is_refused(code: str) -> None:
    with pytest.raises(InvalidCurrency):
        normalize_currency(code)
    with pytest.raises(InvalidCurrency):
        exponent(code)


def test_invalid_currency_is_a_value_error() -> None:
    assert issubclass(InvalidCurrency, ValueError)
