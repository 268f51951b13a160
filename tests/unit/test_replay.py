"""Replaying unmatched and dead deliveries through the same idempotent path."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from domain.events import Action, PaymentEvent
from domain.outcomes import OutcomeKind, Reason
from domain.providers import stripe
from tasks.policy import RetryPolicy
from tasks.processing import (
    process_delivery,
    record_failure,
    release_attempt,
    start_attempt,
)
from tasks.registering import create_order, create_payment, store_delivery
from tasks.replaying import replay_delivery
from tasks.storage import records
from tasks.storage.tables import outcomes, replaced_outcomes
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.unit.committed import CommittedPublisher
from tests.unit.common import NOW

NO_GRACE = RetryPolicy(unmatched_grace=timedelta(0))


def stored_confirmation(engine: Engine, intent: str) -> int:
    event = fixture_json("stripe/events/payment_intent.succeeded.json")
    event["id"] = f"evt_{intent}"
    event["data"]["object"]["id"] = intent
    body = json.dumps(event).encode()
    return store_delivery(
        UnitOfWork(engine), stripe.parse(body), headers="{}", body=body, received_at=NOW
    )


def register(engine: Engine, intent: str) -> None:
    create_order(
        UnitOfWork(engine), reference=f"order-{intent}", total=2000, currency="USD", now=NOW
    )
    create_payment(
        UnitOfWork(engine),
        order_reference=f"order-{intent}",
        provider="stripe",
        provider_reference=intent,
        amount=2000,
        currency="USD",
        now=NOW,
    )


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_an_unmatched_delivery_replayed_after_its_payment_exists_is_applied(
    engine: Engine,
) -> None:
    delivery = stored_confirmation(engine, "pi_late")
    first = process_delivery(delivery, UnitOfWork(engine), NOW, NO_GRACE)
    assert first.outcome.kind is OutcomeKind.UNMATCHED
    register(engine, "pi_late")
    publisher = CommittedPublisher(engine.url.render_as_string(False))  # after the commit

    replay = replay_delivery(delivery, UnitOfWork(engine), NOW, publisher)
    again = process_delivery(delivery, UnitOfWork(engine), NOW, RetryPolicy())

    assert replay is not None and replay.replayed
    assert publisher.published == [delivery]
    assert again.outcome.kind is OutcomeKind.APPLIED
    assert again.outcome.transition == "pending->confirmed"
    assert count(engine, outcomes) == 1
    assert count(engine, replaced_outcomes) == 1  # the unmatched decision stays on record


def test_a_replayed_delivery_waits_a_fresh_grace_period_for_its_payment(engine: Engine) -> None:
    delivery = stored_confirmation(engine, "pi_still_missing")
    policy = RetryPolicy(unmatched_grace=timedelta(minutes=10))
    later = NOW + timedelta(hours=1)
    assert process_delivery(delivery, UnitOfWork(engine), later, policy).outcome.kind is (
        OutcomeKind.UNMATCHED
    )
    replay_delivery(delivery, UnitOfWork(engine), later, lambda _: None)

    waiting = process_delivery(delivery, UnitOfWork(engine), later, policy)

    assert waiting.outcome.is_deferred
    assert waiting.retry_in is not None


def test_a_dead_delivery_can_be_replayed(engine: Engine) -> None:
    register(engine, "pi_dead")
    delivery = stored_confirmation(engine, "pi_dead")
    record_failure(delivery, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)

    replay = replay_delivery(delivery, UnitOfWork(engine), NOW, lambda _: None)
    result = process_delivery(delivery, UnitOfWork(engine), NOW, RetryPolicy())

    assert replay is not None and replay.replayed
    assert replay.why == "was dead; published again"  # what the operator is told
    assert result.outcome.kind is OutcomeKind.APPLIED


def test_replaying_an_applied_delivery_changes_nothing_and_says_so(engine: Engine) -> None:
    register(engine, "pi_done")
    delivery = stored_confirmation(engine, "pi_done")
    process_delivery(delivery, UnitOfWork(engine), NOW, RetryPolicy())
    published: list[int] = []

    replay = replay_delivery(delivery, UnitOfWork(engine), NOW, published.append)

    assert replay is not None and not replay.replayed
    assert "applied" in replay.why
    assert published == []
    assert count(engine, replaced_outcomes) == 0


def test_replaying_an_unknown_delivery_answers_none(engine: Engine) -> None:
    assert replay_delivery(404, UnitOfWork(engine), NOW, lambda _: None) is None


def test_a_delivery_whose_attempts_are_lost_past_the_budget_is_recorded_dead(
    engine: Engine,
) -> None:
    register(engine, "pi_poison")
    delivery = stored_confirmation(engine, "pi_poison")
    policy = RetryPolicy(max_sweeps=2)

    # Each start finds the attempt before it started and never finished (its worker killed).
    started = [start_attempt(delivery, UnitOfWork(engine), NOW, policy) for _ in range(3)]
    verdict = start_attempt(delivery, UnitOfWork(engine), NOW, policy)

    assert started == [None, None, None]  # the first attempt, then two lost: still worth trying
    assert verdict is not None
    assert (verdict.outcome.kind, verdict.outcome.reason) == (
        OutcomeKind.DEAD,
        Reason.WORKER_LOST,
    )
    assert count(engine, outcomes) == 1
    again = replay_delivery(delivery, UnitOfWork(engine), NOW, lambda _: None)
    assert again is not None and again.replayed  # dead is replayable, with a fresh budget
    assert process_delivery(delivery, UnitOfWork(engine), NOW, policy).outcome.kind is (
        OutcomeKind.APPLIED
    )


def test_attempts_that_finish_or_end_in_a_retry_are_never_counted_lost(engine: Engine) -> None:
    delivery = stored_confirmation(engine, "pi_later")  # its payment is not registered yet
    policy = RetryPolicy(max_sweeps=1)

    for attempt in range(5):
        assert start_attempt(delivery, UnitOfWork(engine), NOW, policy) is None
        if attempt % 2:
            process_delivery(delivery, UnitOfWork(engine), NOW, policy)  # deferred
        else:
            release_attempt(delivery, UnitOfWork(engine), NOW)  # a transient error, retried

    assert count(engine, outcomes) == 0
    register(engine, "pi_later")
    assert start_attempt(delivery, UnitOfWork(engine), NOW, policy) is None
    assert process_delivery(delivery, UnitOfWork(engine), NOW, policy).outcome.kind is (
        OutcomeKind.APPLIED
    )
    # Finished: a late copy of its message finds the outcome, and counts nothing.
    late = start_attempt(delivery, UnitOfWork(engine), NOW, policy)
    assert late is None
    assert count(engine, outcomes) == 1


def test_a_stored_body_that_did_not_parse_is_replayable_once_payhook_understands_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(engine, "pi_new_shape")
    good = fixture_json("stripe/events/payment_intent.succeeded.json")
    good["data"]["object"]["id"] = "pi_new_shape"
    shape = dict(good, id="evt_new_shape", data={"object_v2": good["data"]["object"]})
    body = json.dumps(shape).encode()
    delivery = store_delivery(
        UnitOfWork(engine),
        PaymentEvent("stripe", "evt_new_shape", "payment_intent.succeeded", Action.UNSUPPORTED),
        headers="{}",
        body=body,
        received_at=NOW,
    )
    first = process_delivery(delivery, UnitOfWork(engine), NOW, NO_GRACE).outcome
    assert (first.kind, first.reason) == (OutcomeKind.REJECTED, Reason.MALFORMED_EVENT)

    # A newer payhook reads the new shape.
    understood = dict(shape, data={"object": shape["data"]["object_v2"]})
    monkeypatch.setattr(
        records, "parse_delivery", lambda *_: stripe.parse(json.dumps(understood).encode())
    )
    again = replay_delivery(delivery, UnitOfWork(engine), NOW, lambda _: None)
    assert again is not None and again.replayed, again
    outcome = process_delivery(delivery, UnitOfWork(engine), NOW, NO_GRACE).outcome
    assert (outcome.kind, outcome.transition) == (OutcomeKind.APPLIED, "pending->confirmed")
    with engine.connect() as conn:
        replaced = conn.execute(select(replaced_outcomes.c.reason)).scalars().all()
    assert replaced == ["malformed_event"]
