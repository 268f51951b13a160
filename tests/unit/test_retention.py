"""Retention empties old raw bodies and keeps every outcome."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from domain.events import Action, PaymentEvent
from domain.outcomes import OutcomeKind, Reason
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import store_delivery
from tasks.retention import prune_bodies
from tasks.storage.tables import deliveries, outcomes
from tasks.storage.uow import UnitOfWork
from tests.unit.test_replay import NO_GRACE, NOW, count, register, stored_confirmation


def bodies(engine: Engine) -> dict[int, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.body))
        return {row.id: bytes(row.body) for row in rows}


def test_old_processed_bodies_are_emptied_and_outcomes_kept(engine: Engine) -> None:
    register(engine, "pi_old")
    applied = stored_confirmation(engine, "pi_old")
    unmatched = stored_confirmation(engine, "pi_never_registered")
    process_delivery(applied, UnitOfWork(engine), NOW, RetryPolicy())
    assert process_delivery(unmatched, UnitOfWork(engine), NOW, NO_GRACE).outcome.kind is (
        OutcomeKind.UNMATCHED
    )

    pruned = prune_bodies(UnitOfWork(engine), NOW + timedelta(days=31), timedelta(days=30))

    assert pruned == 1
    kept = bodies(engine)
    assert kept[applied] == b""
    assert kept[unmatched] != b""  # still replayable, so its body stays
    assert count(engine, outcomes) == 2


def test_recent_bodies_are_kept(engine: Engine) -> None:
    register(engine, "pi_recent")
    applied = stored_confirmation(engine, "pi_recent")
    process_delivery(applied, UnitOfWork(engine), NOW, RetryPolicy())

    assert prune_bodies(UnitOfWork(engine), NOW + timedelta(days=29), timedelta(days=30)) == 0
    assert bodies(engine)[applied] != b""


def test_pruning_twice_prunes_nothing_more(engine: Engine) -> None:
    register(engine, "pi_twice")
    process_delivery(
        stored_confirmation(engine, "pi_twice"), UnitOfWork(engine), NOW, RetryPolicy()
    )
    later = NOW + timedelta(days=40)
    assert prune_bodies(UnitOfWork(engine), later, timedelta(days=30)) == 1
    assert prune_bodies(UnitOfWork(engine), later, timedelta(days=30)) == 0


def test_a_body_that_did_not_parse_is_kept_for_its_replay(engine: Engine) -> None:
    register(engine, "pi_shape")
    applied = stored_confirmation(engine, "pi_shape")
    process_delivery(applied, UnitOfWork(engine), NOW, RetryPolicy())
    malformed = store_delivery(
        UnitOfWork(engine),
        PaymentEvent("stripe", "evt_shape", "payment_intent.succeeded", Action.UNSUPPORTED),
        headers="{}",
        body=b'{"id": "evt_shape", "type": "payment_intent.succeeded"}',
        received_at=NOW,
    )
    assert process_delivery(malformed, UnitOfWork(engine), NOW, RetryPolicy()).outcome.reason is (
        Reason.MALFORMED_EVENT
    )

    assert prune_bodies(UnitOfWork(engine), NOW + timedelta(days=31), timedelta(days=30)) == 1
    assert bodies(engine)[malformed] != b""
