"""A copy of an event processed before, on real PostgreSQL: recorded by its start mark, one
statement (tasks/storage/starting.py), with the outcome the full path would give; every copy
it cannot vouch for takes the full path.

The task's own sequence, in process: `start_attempt` (the mark, and the copy recorded at once
when it can be), then `process_delivery` when it returned nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from domain.outcomes import Outcome, OutcomeKind, Reason
from tasks.policy import RetryPolicy
from tasks.processing import Processed, process_delivery, start_attempt
from tasks.storage.engine import make_engine
from tasks.storage.tables import deliveries, outcomes
from tasks.storage.uow import UnitOfWork
from tests.integration.stack import fresh_database
from tests.unit.common import NOW
from tests.unit.test_processing import deliver_stripe, register, stripe_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

POLICY = RetryPolicy()
LATER = NOW + timedelta(seconds=5)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine(fresh_database("duplicate_at_once"), pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


def run_task(engine: Engine, delivery_id: int) -> tuple[Processed, list[str]]:
    """What the task does with one delivery; its outcome and the statements it sent."""
    sent: list[str] = []

    def seen(*args: Any) -> None:
        sent.append(args[2].split()[0])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        uow = UnitOfWork(engine)
        with uow.holding():
            processed = start_attempt(delivery_id, uow, LATER, POLICY) or process_delivery(
                delivery_id, uow, LATER, POLICY
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return processed, sent


def recorded(engine: Engine, delivery_id: int) -> tuple[Any, ...]:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.started_at,
                outcomes.c.kind,
                outcomes.c.reason,
                outcomes.c.duplicate_of,
                outcomes.c.recorded_at,
            )
            .join(outcomes, outcomes.c.delivery_id == deliveries.c.id)
            .where(deliveries.c.id == delivery_id)
        ).one()
    return tuple(row)


def outcome_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outcomes)).scalar_one())


def applied_first(engine: Engine, body: bytes) -> int:
    """A payment registered, and the first delivery of `body` processed: applied. Its id."""
    register(engine)
    first = deliver_stripe(engine, body)
    assert run_task(engine, first)[0].outcome.kind is OutcomeKind.APPLIED
    return first


def test_a_copy_of_a_processed_event_is_recorded_by_its_start_mark_in_one_statement(
    engine: Engine,
) -> None:
    body = stripe_body("evt_1")
    first = applied_first(engine, body)
    resent = json.loads(body)
    resent["pending_webhooks"] = 3  # an envelope field that changes between a provider's tries
    copy = deliver_stripe(engine, json.dumps(resent).encode())

    processed, sent = run_task(engine, copy)

    assert processed.outcome == Outcome.same_event(first)
    assert processed.lag_s == 5.0  # from receipt to the outcome, for the worker's metrics
    assert sent == ["WITH"]  # the start mark, which recorded the outcome too
    assert recorded(engine, copy) == (
        "processed",
        1,
        None,
        "acknowledged_duplicate",
        "same_event",
        first,
        LATER,
    )
    # Run again (the broker hands the message out again): the outcome recorded, nothing more.
    again, _ = run_task(engine, copy)
    assert again.outcome == Outcome.same_event(first)
    assert outcome_count(engine) == 2


def test_a_copy_that_means_something_else_takes_the_full_path_to_a_payload_conflict(
    engine: Engine,
) -> None:
    first = applied_first(engine, stripe_body("evt_1"))
    other = deliver_stripe(engine, stripe_body("evt_1", amount_received=1))

    processed, sent = run_task(engine, other)

    assert (processed.outcome.kind, processed.outcome.reason) == (
        OutcomeKind.REJECTED,
        Reason.PAYLOAD_CONFLICT,
    )
    assert processed.outcome.duplicate_of == first
    assert sent[0] == "WITH" and len(sent) > 1  # the mark recorded nothing; the full path did
    assert recorded(engine, other)[3:5] == ("rejected", "payload_conflict")


def test_a_copy_that_arrived_before_the_first_was_processed_waits_for_its_claim(
    engine: Engine,
) -> None:
    register(engine)
    body = stripe_body("evt_1")
    first = deliver_stripe(engine, body)
    copy = deliver_stripe(engine, body)
    # The copy runs first: no claim to see, so it claims the event and applies it.
    assert run_task(engine, copy)[0].outcome.kind is OutcomeKind.APPLIED
    assert run_task(engine, first)[0].outcome == Outcome.same_event(copy)
    assert outcome_count(engine) == 2


def test_a_copy_recorded_by_another_run_meanwhile_is_not_recorded_twice(engine: Engine) -> None:
    body = stripe_body("evt_1")
    first = applied_first(engine, body)
    copy = deliver_stripe(engine, body)
    # Another run of the same delivery took the full path and recorded its outcome first.
    assert process_delivery(copy, UnitOfWork(engine), NOW, POLICY).outcome == Outcome.same_event(
        first
    )

    processed, _ = run_task(engine, copy)

    assert processed.outcome == Outcome.same_event(first)  # read back, not recorded again
    assert recorded(engine, copy)[:2] == ("processed", 1)
    assert recorded(engine, copy)[6] == NOW  # the other run's outcome stands
    assert outcome_count(engine) == 2


def test_a_copy_of_an_event_payhook_does_not_act_on_takes_the_full_path(engine: Engine) -> None:
    body = stripe_body("evt_1", name="charge.failed.json")
    first = deliver_stripe(engine, body)
    assert run_task(engine, first)[0].outcome.reason is Reason.UNSUPPORTED_EVENT
    copy = deliver_stripe(engine, body)

    processed, sent = run_task(engine, copy)

    assert processed.outcome == Outcome.same_event(first)
    assert sent[0] == "WITH" and len(sent) > 1  # the mark recorded nothing; the full path did


def test_a_copy_past_its_budget_of_lost_attempts_is_recorded_dead(engine: Engine) -> None:
    body = stripe_body("evt_1")
    applied_first(engine, body)
    copy = deliver_stripe(engine, body)
    with engine.begin() as conn:  # its attempts lost up to the budget, the last one too
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id == copy)
            .values(redeliveries=POLICY.max_sweeps, started_at=NOW)
        )

    processed, _ = run_task(engine, copy)

    assert (processed.outcome.kind, processed.outcome.reason) == (
        OutcomeKind.DEAD,
        Reason.WORKER_LOST,
    )
