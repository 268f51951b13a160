"""The use cases on our real SQL (SQLite in tmp_path): one outcome per delivery, changes once."""

import json
import random
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.providers import standard, stripe
from tasks.confirming import Confirmation, ConfirmStatus, confirm_payment
from tasks.policy import RetryPolicy
from tasks.processing import Processed, UnknownDelivery, process_delivery, record_failure
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage import queries
from tasks.storage.errors import is_transient
from tasks.storage.tables import idempotency_keys, outcomes, refunds
from tasks.storage.uow import UnitOfWork
from tasks.waking import wake_due
from tests.fixture_files import fixture_json
from tests.unit.common import NOW

PI = "pi_000000000000000000000000"  # the PaymentIntent of the Stripe fixtures
POLICY = RetryPolicy()


def stripe_body(
    event_id: str, name: str = "payment_intent.succeeded.json", **changes: Any
) -> bytes:
    """A real Stripe fixture with its own event id; `changes` go into data.object."""
    document = fixture_json(f"stripe/events/{name}")
    document["id"] = event_id
    document["data"]["object"].update(changes)
    return json.dumps(document).encode()


def standard_body(event_type: str, reference: str = "pay_1", **data: Any) -> bytes:
    fields = {"payment_reference": reference, "amount": 1500, "currency": "EUR", **data}
    return json.dumps({"type": event_type, "data": fields}).encode()


def deliver_stripe(engine: Engine, body: bytes, received_at: datetime = NOW) -> int:
    return store_delivery(
        UnitOfWork(engine),
        stripe.parse(body),
        headers="{}",
        body=body,
        received_at=received_at,
    )


def deliver_standard(
    engine: Engine, webhook_id: str, body: bytes, received_at: datetime = NOW
) -> int:
    return store_delivery(
        UnitOfWork(engine),
        standard.parse("shop", webhook_id, body),
        headers="{}",
        body=body,
        received_at=received_at,
    )


def register(
    engine: Engine,
    *,
    reference: str = PI,
    provider: str = "stripe",
    amount: int = 2000,
    currency: str = "USD",
    order: str = "order-1",
) -> int:
    create_order(UnitOfWork(engine), reference=order, total=amount, currency=currency, now=NOW)
    return create_payment(
        UnitOfWork(engine),
        order_reference=order,
        provider=provider,
        provider_reference=reference,
        amount=amount,
        currency=currency,
        now=NOW,
    )


def process(engine: Engine, delivery_id: int, now: datetime = NOW) -> Processed:
    return process_delivery(delivery_id, UnitOfWork(engine), now, POLICY)


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def delivery_view(engine: Engine, delivery_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        view = queries.delivery(conn, delivery_id)
    assert view is not None
    return view


def payment_view(engine: Engine, payment_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        view = queries.payment(conn, payment_id)
    assert view is not None
    return view


def order_view(engine: Engine, reference: str = "order-1") -> dict[str, Any]:
    with engine.connect() as conn:
        view = queries.order(conn, reference)
    assert view is not None
    return view


# --- process_delivery ---------------------------------------------------------------------


def test_first_delivery_is_applied_and_the_order_paid(engine: Engine) -> None:
    payment_id = register(engine)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    processed = process(engine, delivery_id)

    assert processed.outcome == Outcome.applied("pending->confirmed", payment_id)
    assert processed.retry_in is None
    assert processed.as_dict() == {
        "kind": "applied",
        "reason": None,
        "transition": "pending->confirmed",
        "delivery_id": delivery_id,
        "provider": "stripe",
        "event_id": "evt_1",
        "payment_id": payment_id,
        "duplicate_of": None,
    }
    payment = payment_view(engine, payment_id)
    assert payment["state"] == "confirmed"
    assert payment["confirmed_by"] == delivery_id
    assert [o["delivery_id"] for o in payment["outcomes"]] == [delivery_id]
    assert order_view(engine)["status"] == "paid"
    delivery = delivery_view(engine, delivery_id)
    assert delivery["status"] == "processed"
    assert delivery["attempts"] == 1
    assert delivery["outcome"]["kind"] == "applied"
    assert count(engine, outcomes) == 1


def test_redelivery_of_the_same_delivery_returns_the_recorded_outcome(engine: Engine) -> None:
    payment_id = register(engine)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    first = process(engine, delivery_id)

    again = process(engine, delivery_id, NOW + timedelta(minutes=1))

    assert again.outcome == first.outcome
    assert count(engine, outcomes) == 1
    assert delivery_view(engine, delivery_id)["attempts"] == 1
    assert order_view(engine)["paid_amount"] == 2000
    assert payment_view(engine, payment_id)["confirmed_by"] == delivery_id


def test_second_delivery_of_the_same_event_is_a_same_event_duplicate(engine: Engine) -> None:
    register(engine)
    body = stripe_body("evt_1")
    first_id = deliver_stripe(engine, body)
    second_id = deliver_stripe(engine, body)
    process(engine, first_id)

    processed = process(engine, second_id)

    assert processed.outcome == Outcome.same_event(first_id)
    assert count(engine, outcomes) == 2
    assert order_view(engine)["paid_amount"] == 2000
    assert delivery_view(engine, second_id)["outcome"]["duplicate_of"] == first_id


def test_a_resent_event_with_other_pending_webhooks_is_still_the_same_event(
    engine: Engine,
) -> None:
    register(engine)
    first_id = deliver_stripe(engine, stripe_body("evt_1"))
    resent = json.loads(stripe_body("evt_1"))
    resent["pending_webhooks"] = 1
    second_id = deliver_stripe(engine, json.dumps(resent).encode())
    process(engine, first_id)

    assert process(engine, second_id).outcome == Outcome.same_event(first_id)


def test_same_event_id_with_another_meaning_is_a_payload_conflict(engine: Engine) -> None:
    register(engine)
    first_id = deliver_stripe(engine, stripe_body("evt_1"))
    other_id = deliver_stripe(engine, stripe_body("evt_1", amount_received=1))
    process(engine, first_id)

    processed = process(engine, other_id)

    assert processed.outcome.kind is OutcomeKind.REJECTED
    assert processed.outcome.reason is Reason.PAYLOAD_CONFLICT
    assert processed.outcome.duplicate_of == first_id
    assert order_view(engine)["paid_amount"] == 2000


@pytest.mark.parametrize("first_amount", [1, 2000], ids=["a_then_b", "b_then_a"])
def test_a_payload_conflict_is_found_whichever_meaning_came_first(
    engine: Engine, first_amount: int
) -> None:
    register(engine)
    first_id = deliver_stripe(engine, stripe_body("evt_1", amount_received=first_amount))
    other_id = deliver_stripe(engine, stripe_body("evt_1", amount_received=2001 - first_amount))
    process(engine, first_id)

    processed = process(engine, other_id)

    assert (processed.outcome.kind, processed.outcome.reason) == (
        OutcomeKind.REJECTED,
        Reason.PAYLOAD_CONFLICT,
    )


def test_a_duplicate_points_at_the_first_delivery_of_its_own_provider_and_event(
    engine: Engine,
) -> None:
    # Several claimed events: another id of one provider, the same id at another provider.
    register(engine)
    register(engine, provider="shop", reference="pay_1", amount=1500, currency="EUR", order="o-2")
    unsupported = stripe_body("evt_2", "charge.captured.json")
    confirmation = standard_body("payment.succeeded")
    firsts = [
        deliver_stripe(engine, stripe_body("evt_1")),
        deliver_stripe(engine, unsupported),
        deliver_standard(engine, "evt_2", confirmation),
    ]
    copies = [
        deliver_stripe(engine, unsupported),
        deliver_standard(engine, "evt_2", confirmation),
    ]
    for delivery_id in firsts:
        process(engine, delivery_id)

    outcomes_of_copies = [process(engine, delivery_id).outcome for delivery_id in copies]

    assert outcomes_of_copies == [Outcome.same_event(firsts[1]), Outcome.same_event(firsts[2])]


def test_another_event_for_a_confirmed_payment_is_already_in_state(engine: Engine) -> None:
    payment_id = register(engine)
    first_id = deliver_stripe(engine, stripe_body("evt_1"))
    charge_id = deliver_stripe(engine, stripe_body("evt_2", "charge.succeeded.json"))
    process(engine, first_id)

    processed = process(engine, charge_id)

    assert processed.outcome == Outcome.already_in_state(payment_id, first_id)
    assert order_view(engine)["paid_amount"] == 2000


def test_failure_after_confirmation_is_recorded_as_stale(engine: Engine) -> None:
    payment_id = register(engine)
    process(engine, deliver_stripe(engine, stripe_body("evt_1")))
    failed_id = deliver_stripe(engine, stripe_body("evt_2", "payment_intent.payment_failed.json"))

    processed = process(engine, failed_id)

    assert processed.outcome == Outcome.ignored(Reason.STALE, payment_id)
    assert payment_view(engine, payment_id)["state"] == "confirmed"


def test_amount_mismatch_is_rejected_and_recorded(engine: Engine) -> None:
    payment_id = register(engine, amount=2500)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    processed = process(engine, delivery_id)

    assert processed.outcome == Outcome.rejected(Reason.AMOUNT_MISMATCH, payment_id)
    assert payment_view(engine, payment_id)["state"] == "pending"
    assert delivery_view(engine, delivery_id)["status"] == "processed"


def test_unknown_payment_within_the_grace_is_deferred_and_the_claim_given_back(
    engine: Engine,
) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    processed = process(engine, delivery_id, NOW + timedelta(seconds=5))

    assert processed.outcome.kind is OutcomeKind.DEFERRED
    assert processed.outcome.reason is Reason.NO_PAYMENT
    assert processed.retry_in is not None
    assert 0 < processed.retry_in <= POLICY.deferral_cap_s
    assert count(engine, outcomes) == 0
    assert count(engine, idempotency_keys) == 0
    delivery = delivery_view(engine, delivery_id)
    assert delivery["status"] == "deferred"
    assert delivery["attempts"] == 1
    assert delivery["outcome"] is None


def test_a_deferred_delivery_is_applied_once_the_payment_is_registered(engine: Engine) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    process(engine, delivery_id, NOW + timedelta(seconds=5))
    payment_id = register(engine)

    processed = process(engine, delivery_id, NOW + timedelta(minutes=1))

    assert processed.outcome == Outcome.applied("pending->confirmed", payment_id)
    assert processed.retry_in is None
    assert delivery_view(engine, delivery_id)["attempts"] == 2
    assert count(engine, outcomes) == 1


def test_a_duplicate_of_a_deferred_delivery_can_apply_the_change(engine: Engine) -> None:
    # The first delivery gave its claim back, so a copy delivered meanwhile may win it.
    body = stripe_body("evt_1")
    first_id = deliver_stripe(engine, body)
    process(engine, first_id, NOW + timedelta(seconds=5))
    payment_id = register(engine)
    copy_id = deliver_stripe(engine, body, NOW + timedelta(seconds=30))

    assert process(engine, copy_id, NOW + timedelta(seconds=31)).outcome.kind == "applied"
    late = process(engine, first_id, NOW + timedelta(minutes=1))

    assert late.outcome == Outcome.same_event(copy_id)
    assert payment_view(engine, payment_id)["confirmed_by"] == copy_id


def test_unknown_payment_after_the_grace_is_unmatched(engine: Engine) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    processed = process(engine, delivery_id, NOW + POLICY.unmatched_grace)

    assert processed.outcome.kind is OutcomeKind.UNMATCHED
    assert processed.outcome.reason is Reason.NO_PAYMENT
    assert processed.retry_in is None
    assert delivery_view(engine, delivery_id)["outcome"]["kind"] == "unmatched"
    assert count(engine, outcomes) == 1


def test_unsupported_event_is_ignored(engine: Engine) -> None:
    register(engine)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1", "charge.failed.json"))

    processed = process(engine, delivery_id)

    assert processed.outcome == Outcome.ignored(Reason.UNSUPPORTED_EVENT)
    assert delivery_view(engine, delivery_id)["status"] == "processed"


def test_a_refund_naming_only_the_charge_finds_the_payment_through_its_alias(
    engine: Engine,
) -> None:
    payment_id = register(engine)  # registered under its PaymentIntent id only
    process(engine, deliver_stripe(engine, stripe_body("evt_1")))  # teaches the charge id
    refund_id = deliver_stripe(engine, stripe_body("evt_2", "charge.refunded.json"))

    processed = process(engine, refund_id)

    assert processed.outcome == Outcome.applied("refund:partial", payment_id)
    assert payment_view(engine, payment_id)["refunded_amount"] == 100
    assert order_view(engine)["refunded_amount"] == 100


def test_a_refund_naming_an_unknown_charge_waits_for_its_payment(engine: Engine) -> None:
    register(engine)  # no confirmation yet, so the charge id is not known
    refund_id = deliver_stripe(engine, stripe_body("evt_2", "charge.refunded.json"))

    processed = process(engine, refund_id)

    assert processed.outcome == Outcome.deferred(Reason.NO_PAYMENT)
    assert count(engine, outcomes) == 0


def test_a_confirmation_that_teaches_the_charge_wakes_the_refund_naming_only_it(
    engine: Engine,
) -> None:
    payment_id = register(engine)
    refund_id = deliver_stripe(engine, stripe_body("evt_2", "charge.refunded.json"))
    assert process(engine, refund_id).outcome == Outcome.deferred(Reason.NO_PAYMENT)

    confirmed = process(engine, deliver_stripe(engine, stripe_body("evt_1")))

    assert confirmed.woken == (refund_id,)
    refunded = process(engine, refund_id)
    assert refunded.outcome == Outcome.applied("refund:partial", payment_id)


def test_a_stored_body_the_parser_refuses_is_rejected_as_malformed(engine: Engine) -> None:
    good = stripe_body("evt_1")
    delivery_id = store_delivery(
        UnitOfWork(engine), stripe.parse(good), headers="{}", body=b"{not json", received_at=NOW
    )
    assert process(engine, delivery_id).outcome == Outcome.rejected(Reason.MALFORMED_EVENT)


def test_processing_an_unknown_delivery_raises(engine: Engine) -> None:
    with pytest.raises(UnknownDelivery):
        process(engine, 999)


def test_standard_refunds_are_stored_once_and_add_up(engine: Engine) -> None:
    payment_id = register(engine, provider="shop", reference="pay_1", amount=1500, currency="EUR")
    confirmed = deliver_standard(engine, "msg_1", standard_body("payment.succeeded"))
    partial = deliver_standard(
        engine, "msg_2", standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    )
    # Another event id for the same refund: the refund reference makes it a duplicate.
    same_refund = deliver_standard(
        engine, "msg_3", standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    )
    rest = deliver_standard(
        engine, "msg_4", standard_body("payment.refunded", amount=1000, refund_reference="rf_2")
    )

    assert process(engine, confirmed).outcome.transition == "pending->confirmed"
    assert process(engine, partial).outcome.transition == "refund:partial"
    assert process(engine, same_refund).outcome.reason is Reason.ALREADY_IN_STATE
    assert process(engine, rest).outcome.transition == "confirmed->refunded"

    payment = payment_view(engine, payment_id)
    assert payment["state"] == "refunded"
    assert payment["refunded_amount"] == 1500
    assert count(engine, refunds) == 2
    order = order_view(engine)
    assert order["refunded_amount"] == 1500
    assert order["status"] == "pending"


def test_a_refund_before_its_capture_waits_and_the_capture_wakes_it(engine: Engine) -> None:
    payment_id = register(engine, provider="shop", reference="pay_1", amount=1500, currency="EUR")
    body = standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    refund_id = deliver_standard(engine, "msg_1", body)

    waiting = process(engine, refund_id)
    assert waiting.outcome == Outcome.awaiting_state(payment_id)
    assert waiting.retry_in is not None
    assert delivery_view(engine, refund_id)["status"] == "deferred"
    assert count(engine, outcomes) == 0
    assert count(engine, idempotency_keys) == 0  # its claim went back while it waits

    capture = process(engine, deliver_standard(engine, "msg_2", standard_body("payment.succeeded")))
    assert capture.outcome.transition == "pending->confirmed"
    assert capture.woken == (refund_id,)  # to be published after the commit
    assert delivery_view(engine, refund_id)["status"] == "received"

    applied = process(engine, refund_id, NOW + timedelta(seconds=1))
    assert applied.outcome == Outcome.applied("refund:partial", payment_id)
    assert order_view(engine)["refunded_amount"] == 500


def test_an_event_still_awaiting_its_state_after_the_bound_is_unmatched_and_replayable(
    engine: Engine,
) -> None:
    payment_id = register(engine, provider="shop", reference="pay_1", amount=1500, currency="EUR")
    body = standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    delivery_id = deliver_standard(engine, "msg_1", body)

    # Past the 10-minute grace for a missing payment, it still waits: the payment exists.
    still = process(engine, delivery_id, NOW + POLICY.unmatched_grace + timedelta(hours=1))
    assert still.outcome.is_deferred

    expired = process(engine, delivery_id, NOW + POLICY.await_state)
    assert expired.outcome == Outcome(
        OutcomeKind.UNMATCHED, Reason.AWAITING_STATE, None, payment_id
    )
    assert count(engine, refunds) == 0
    assert count(engine, idempotency_keys) == 0  # a resend of the refund processes normally


def test_a_resend_of_an_unmatched_event_applies_once_the_payment_exists(engine: Engine) -> None:
    body = stripe_body("evt_1")
    first_id = deliver_stripe(engine, body)
    assert process(engine, first_id, NOW + POLICY.unmatched_grace).outcome.kind == "unmatched"
    payment_id = register(engine)

    resend_id = deliver_stripe(engine, body, NOW + POLICY.unmatched_grace + timedelta(hours=1))
    resent = process(engine, resend_id, NOW + POLICY.unmatched_grace + timedelta(hours=1))

    assert resent.outcome == Outcome.applied("pending->confirmed", payment_id)
    assert delivery_view(engine, first_id)["outcome"]["kind"] == "unmatched"  # kept
    assert payment_view(engine, payment_id)["confirmed_by"] == resend_id


def test_a_dead_delivery_gives_its_claim_back(engine: Engine) -> None:
    body = stripe_body("evt_1")
    payment_id = register(engine)
    first_id = deliver_stripe(engine, body)
    with UnitOfWork(engine) as uow:  # a claim kept by an earlier run that then died
        uow.idempotency_keys.claim(stripe.parse(body).key, first_id, "f", NOW)
        uow.commit()

    record_failure(first_id, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)
    resent = process(engine, deliver_stripe(engine, body))

    assert resent.outcome == Outcome.applied("pending->confirmed", payment_id)


def test_registering_the_payment_wakes_the_deliveries_that_came_before_it(
    engine: Engine,
) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    other_id = deliver_stripe(engine, stripe_body("evt_2", id="pi_other"))
    process(engine, delivery_id)
    process(engine, other_id)
    published: list[int] = []

    create_order(UnitOfWork(engine), reference="order-1", total=2000, currency="USD", now=NOW)
    payment_id = create_payment(
        UnitOfWork(engine),
        order_reference="order-1",
        provider="stripe",
        provider_reference=PI,
        amount=2000,
        currency="USD",
        now=NOW,
        publish=published.append,
    )

    assert published == [delivery_id]  # not the one waiting for another payment
    assert delivery_view(engine, other_id)["status"] == "deferred"
    assert process(engine, delivery_id).outcome == Outcome.applied("pending->confirmed", payment_id)


def test_the_wake_task_publishes_deferred_deliveries_whose_time_has_come(engine: Engine) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    deferred = process(engine, delivery_id)
    assert deferred.retry_in is not None
    due = NOW + timedelta(seconds=deferred.retry_in)
    published: list[int] = []

    assert (
        wake_due(UnitOfWork(engine), due - timedelta(seconds=0.1), POLICY, published.append) == []
    )
    assert wake_due(UnitOfWork(engine), due, POLICY, published.append) == [delivery_id]
    assert wake_due(UnitOfWork(engine), due, POLICY, published.append) == []  # published once
    assert published == [delivery_id]
    assert delivery_view(engine, delivery_id)["status"] == "received"


def test_attempts_of_a_waiting_delivery_back_off(engine: Engine) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    now, delays = NOW, []
    for _ in range(8):
        processed = process(engine, delivery_id, now)
        assert processed.retry_in is not None
        delays.append(processed.retry_in)
        now += timedelta(seconds=processed.retry_in)
    assert delays[-1] > delays[0]
    assert max(delays) <= POLICY.deferral_cap_s


# --- record_failure -----------------------------------------------------------------------


def test_record_failure_records_dead_once(engine: Engine) -> None:
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    first = record_failure(delivery_id, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)
    second = record_failure(delivery_id, UnitOfWork(engine), NOW, Reason.RETRY_BUDGET_EXHAUSTED)

    assert first.outcome == Outcome.dead(Reason.PROCESSING_ERROR)
    assert second.outcome == first.outcome
    assert count(engine, outcomes) == 1
    assert delivery_view(engine, delivery_id)["status"] == "processed"


def test_record_failure_keeps_an_outcome_already_recorded(engine: Engine) -> None:
    register(engine)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    applied = process(engine, delivery_id)

    after = record_failure(delivery_id, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)

    assert after.outcome == applied.outcome
    assert count(engine, outcomes) == 1


def test_a_dead_delivery_is_not_processed_again(engine: Engine) -> None:
    register(engine)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))
    record_failure(delivery_id, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)

    assert process(engine, delivery_id).outcome.kind is OutcomeKind.DEAD
    assert order_view(engine)["paid_amount"] == 0


# --- confirm_payment ----------------------------------------------------------------------


def confirm(
    engine: Engine, payment_id: int, key: str | None = None, fingerprint: str = "f1"
) -> Confirmation:
    return confirm_payment(
        payment_id, UnitOfWork(engine), NOW, idempotency_key=key, request_fingerprint=fingerprint
    )


def test_manual_confirmation_confirms_then_answers_already_confirmed(engine: Engine) -> None:
    payment_id = register(engine)

    first = confirm(engine, payment_id)
    second = confirm(engine, payment_id)

    assert first.status is ConfirmStatus.CONFIRMED
    assert first.payment is not None
    assert first.payment["state"] == "confirmed"
    assert first.payment["confirmed_by"] is None
    assert not first.replayed
    assert second.status is ConfirmStatus.ALREADY_CONFIRMED
    assert order_view(engine)["paid_amount"] == 2000


def test_a_webhook_after_manual_confirmation_is_already_in_state(engine: Engine) -> None:
    payment_id = register(engine)
    confirm(engine, payment_id)
    delivery_id = deliver_stripe(engine, stripe_body("evt_1"))

    assert process(engine, delivery_id).outcome == Outcome.already_in_state(payment_id, None)
    assert order_view(engine)["paid_amount"] == 2000


def test_the_same_idempotency_key_and_request_replays_the_first_answer(engine: Engine) -> None:
    payment_id = register(engine)
    first = confirm(engine, payment_id, key="k1")

    replay = confirm(engine, payment_id, key="k1")

    assert replay.status is ConfirmStatus.CONFIRMED
    assert replay.replayed
    assert replay.payment == first.payment


def test_the_same_idempotency_key_with_another_request_is_key_reused(engine: Engine) -> None:
    payment_id = register(engine)
    confirm(engine, payment_id, key="k1")

    reused = confirm(engine, payment_id, key="k1", fingerprint="f2")

    assert reused.status is ConfirmStatus.KEY_REUSED
    assert reused.payment is None


def test_a_new_idempotency_key_after_confirmation_is_already_confirmed(engine: Engine) -> None:
    payment_id = register(engine)
    confirm(engine, payment_id, key="k1")
    assert confirm(engine, payment_id, key="k2").status is ConfirmStatus.ALREADY_CONFIRMED


def test_manual_confirmation_of_an_unknown_payment_is_not_found(engine: Engine) -> None:
    missing = confirm(engine, 999)
    assert missing.status is ConfirmStatus.NOT_FOUND
    assert missing.payment is None


def test_manual_confirmation_of_a_canceled_payment_is_an_invalid_transition(
    engine: Engine,
) -> None:
    payment_id = register(engine, provider="shop", reference="pay_1", amount=1500, currency="EUR")
    process(engine, deliver_standard(engine, "msg_1", standard_body("payment.canceled")))

    assert confirm(engine, payment_id).status is ConfirmStatus.INVALID_TRANSITION
    assert payment_view(engine, payment_id)["state"] == "canceled"


# --- retry policy -------------------------------------------------------------------------


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str | None, message: str = "driver error") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "55P03", "08006", "08001"])
def test_serialization_deadlock_lock_timeout_and_connection_states_are_transient(
    sqlstate: str,
) -> None:
    assert is_transient(OperationalError("UPDATE x", None, FakeDriverError(sqlstate)))
    assert is_transient(DBAPIError("UPDATE x", None, FakeDriverError(sqlstate)))


@pytest.mark.parametrize("sqlstate", ["23505", "42P01", "22001"])
def test_other_sqlstates_are_permanent(sqlstate: str) -> None:
    assert not is_transient(IntegrityError("INSERT x", None, FakeDriverError(sqlstate)))
    assert not is_transient(OperationalError("INSERT x", None, FakeDriverError(sqlstate)))


def test_an_invalidated_connection_is_transient() -> None:
    error = DBAPIError("SELECT 1", None, FakeDriverError("23505"), connection_invalidated=True)
    assert is_transient(error)


def test_a_locked_sqlite_database_is_transient_but_a_missing_table_is_not() -> None:
    locked = OperationalError("x", None, sqlite3.OperationalError("database is locked"))
    missing = OperationalError("x", None, sqlite3.OperationalError("no such table: deliveries"))
    assert is_transient(locked)
    assert not is_transient(missing)


def test_a_pool_timeout_is_transient() -> None:
    assert is_transient(PoolTimeout("QueuePool limit reached"))


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), KeyError("x"), RuntimeError("bug")],
    ids=["ValueError", "KeyError", "RuntimeError"],
)
def test_errors_that_are_not_database_errors_are_permanent(error: Exception) -> None:
    assert not is_transient(error)


class EdgeOfJitter(random.Random):
    """A random source that always picks the lowest (or the highest) jittered delay."""

    def __init__(self, *, highest: bool) -> None:
        super().__init__(0)
        self.highest = highest

    def uniform(self, a: float, b: float) -> float:
        return b if self.highest else a


@pytest.mark.parametrize("highest", [False, True], ids=["lowest-jitter", "highest-jitter"])
def test_deferral_backoff_doubles_up_to_the_cap_and_stays_there(highest: bool) -> None:
    rng = EdgeOfJitter(highest=highest)
    delays = [POLICY.deferral_delay(attempt, rng) for attempt in range(10)]
    full = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    assert delays == (full if highest else [d / 2 for d in full])


@pytest.mark.parametrize("highest", [False, True], ids=["lowest-jitter", "highest-jitter"])
def test_transient_backoff_grows_and_is_capped(highest: bool) -> None:
    rng = EdgeOfJitter(highest=highest)
    delays = [POLICY.transient_delay(attempt, rng) for attempt in range(100)]
    assert delays == sorted(delays)
    assert delays[0] <= POLICY.transient_base_s
    assert max(delays) <= POLICY.transient_cap_s
    assert delays[-1] >= POLICY.transient_cap_s / 2


@pytest.mark.parametrize("seed", range(10))
def test_jittered_backoff_grows_below_the_cap_and_never_exceeds_it(seed: int) -> None:
    rng = random.Random(seed)
    # 2, 4, 8, 16, 32 s ceilings: each attempt's floor is the previous attempt's ceiling.
    below_cap = [POLICY.deferral_delay(attempt, rng) for attempt in range(5)]
    assert below_cap == sorted(below_cap)
    assert all(POLICY.deferral_delay(a, rng) <= POLICY.deferral_cap_s for a in range(200))
    assert all(POLICY.transient_delay(a, rng) <= POLICY.transient_cap_s for a in range(200))


def test_backoff_of_a_huge_attempt_count_is_still_capped() -> None:
    assert POLICY.deferral_delay(10**9) <= POLICY.deferral_cap_s


def test_grace_is_over_exactly_at_the_unmatched_grace() -> None:
    assert not POLICY.grace_over(NOW, NOW + POLICY.unmatched_grace - timedelta(seconds=1))
    assert POLICY.grace_over(NOW, NOW + POLICY.unmatched_grace)
