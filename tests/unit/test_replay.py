"""Replaying unmatched and dead deliveries through the same idempotent path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from domain.outcomes import OutcomeKind, Reason
from domain.providers import stripe
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import note_redelivery, process_delivery, record_failure
from tasks.registering import create_order, create_payment, store_delivery
from tasks.replaying import replay_delivery
from tasks.storage.engine import make_engine
from tasks.storage.tables import outcomes, replaced_outcomes
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.unit.committed import CommittedPublisher

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NO_GRACE = RetryPolicy(unmatched_grace=timedelta(0))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    upgrade(url)
    return make_engine(url)


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


def test_a_delivery_redelivered_past_the_budget_is_recorded_dead(engine: Engine) -> None:
    register(engine, "pi_poison")
    delivery = stored_confirmation(engine, "pi_poison")
    policy = RetryPolicy(max_redeliveries=2)

    counted = [note_redelivery(delivery, UnitOfWork(engine), NOW, policy) for _ in range(2)]
    verdict = note_redelivery(delivery, UnitOfWork(engine), NOW, policy)

    assert counted == [None, None]  # still worth trying
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
