"""The sweeper on our real SQL (SQLite in tmp_path): lost messages published again, queued ones
left alone, at most once per period, and never a delivery recorded dead by the sweeper."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from domain.outcomes import OutcomeKind, Reason
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import start_attempt
from tasks.storage.engine import make_engine
from tasks.storage.tables import outcomes
from tasks.storage.uow import UnitOfWork
from tasks.sweeping import SweepReport, sweep
from tests.unit.test_processing import (
    NOW,
    count,
    deliver_stripe,
    delivery_view,
    process,
    register,
    stripe_body,
)

POLICY = RetryPolicy()
PERIOD = POLICY.sweep_after + timedelta(seconds=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/sweep.db"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def run_sweep(
    engine: Engine,
    published: list[int],
    *,
    queued: int | None = 0,
    at: timedelta = timedelta(0),
    policy: RetryPolicy = POLICY,
) -> SweepReport:
    return sweep(UnitOfWork(engine), NOW + at, policy, published.append, lambda: queued)


def stored(engine: Engine, count: int, *, ago: timedelta = timedelta(hours=1)) -> list[int]:
    return [
        deliver_stripe(engine, stripe_body(f"evt_{n}"), received_at=NOW - ago + n * timedelta(0, 1))
        for n in range(count)
    ]


SECOND = timedelta(seconds=1)
# A delivery that looks lost is published once it still does a task time limit later.
LATER = timedelta(seconds=POLICY.time_limit_s)


def test_a_delivery_left_without_an_outcome_is_published_again_at_the_next_sweep(
    engine: Engine,
) -> None:
    (lost,) = stored(engine, 1)
    recent = deliver_stripe(engine, stripe_body("evt_new"), received_at=NOW - timedelta(minutes=1))
    published: list[int] = []

    first = run_sweep(engine, published)  # it looks lost: remembered, not published yet
    second = run_sweep(engine, published, at=LATER - SECOND)
    third = run_sweep(engine, published, at=LATER)

    assert first.republished == second.republished == []
    assert published == third.republished == [lost]
    assert recent not in published
    assert count(engine, outcomes) == 0


def test_a_message_a_worker_took_but_had_not_started_is_not_published_again(
    engine: Engine,
) -> None:
    (taken,) = stored(engine, 1)
    published: list[int] = []

    run_sweep(engine, published)  # the worker's process was busy running this very sweep
    assert start_attempt(taken, UnitOfWork(engine), NOW + SECOND, POLICY) is None
    run_sweep(engine, published, at=LATER)

    assert published == []


def test_processed_deliveries_are_left_alone(engine: Engine) -> None:
    register(engine)
    (done,) = stored(engine, 1)
    process(engine, done, NOW - timedelta(hours=1))
    published: list[int] = []

    run_sweep(engine, published)
    run_sweep(engine, published, at=LATER)

    assert published == []


def test_a_delivery_is_published_again_at_most_once_per_period(engine: Engine) -> None:
    (lost,) = stored(engine, 1)
    published: list[int] = []

    for second in range(int((LATER + POLICY.sweep_after).total_seconds())):  # every second
        run_sweep(engine, published, at=second * SECOND)
    assert published == [lost]
    for second in range(int((LATER + POLICY.sweep_after).total_seconds()) + 1):
        run_sweep(engine, published, at=LATER + PERIOD + second * SECOND)
    assert published == [lost, lost]


def test_deliveries_queued_behind_a_backlog_are_not_published_again(engine: Engine) -> None:
    backlog = stored(engine, 300)
    published: list[int] = []

    # The queue holds every one of them: nothing is lost, however often it sweeps.
    for second in range(3):
        assert run_sweep(engine, published, queued=300, at=second * SECOND).republished == []
    # It holds 200: the queue is first in, first out, so the 100 published first are lost.
    run_sweep(engine, published, queued=200, at=3 * SECOND)
    report = run_sweep(engine, published, queued=200, at=3 * SECOND + LATER)
    assert report.republished == backlog[:100]


def test_a_backlog_waiting_longer_than_every_sweep_budget_is_never_recorded_dead(
    engine: Engine,
) -> None:
    policy = RetryPolicy(max_sweeps=2)
    backlog = stored(engine, 20)
    published: list[int] = []

    for period in range(10):  # no worker for twenty periods; the queue was lost meanwhile
        at = period * 2 * (PERIOD + LATER)
        run_sweep(engine, published, queued=0, at=at, policy=policy)
        run_sweep(engine, published, queued=0, at=at + LATER, policy=policy)

    assert count(engine, outcomes) == 0
    assert published == backlog * 10  # never more than once per period each
    # A worker that starts one now finds no attempt lost: none was ever started.
    assert (
        start_attempt(backlog[0], UnitOfWork(engine), NOW + 20 * (PERIOD + LATER), policy) is None
    )


def test_only_attempts_started_and_lost_use_up_the_budget(engine: Engine) -> None:
    policy = RetryPolicy(max_sweeps=2)
    (delivery,) = stored(engine, 1)
    published: list[int] = []
    # Longer ago than an attempt may run (the time limit) and the sweep period together.
    stale = timedelta(seconds=policy.time_limit_s) + PERIOD + LATER

    for attempt in range(1, 4):
        at = attempt * stale
        # A worker starts it and dies with its message (a broker restarted empty meanwhile).
        assert start_attempt(delivery, UnitOfWork(engine), NOW + at, policy) is None
        run_sweep(engine, published, at=at + stale, policy=policy)
        swept = run_sweep(engine, published, at=at + stale + LATER, policy=policy)
        assert swept.republished == [delivery]
    verdict = start_attempt(delivery, UnitOfWork(engine), NOW + 4 * stale, policy)

    assert verdict is not None
    assert (verdict.outcome.kind, verdict.outcome.reason) == (
        OutcomeKind.DEAD,
        Reason.WORKER_LOST,
    )
    assert delivery_view(engine, delivery)["outcome"]["kind"] == "dead"


def test_an_attempt_still_running_is_not_published_again(engine: Engine) -> None:
    (delivery,) = stored(engine, 1)
    published: list[int] = []
    assert start_attempt(delivery, UnitOfWork(engine), NOW, POLICY) is None

    run_sweep(engine, published, at=PERIOD)  # within the time limit: it may still finish
    run_sweep(engine, published, at=PERIOD + SECOND)
    run_sweep(engine, published, at=PERIOD + LATER - SECOND)

    assert published == []


def test_a_broker_that_cannot_say_its_depth_leaves_the_sweeper_publishing_once_per_period(
    engine: Engine,
) -> None:
    (lost,) = stored(engine, 1)
    published: list[int] = []

    run_sweep(engine, published, queued=None)
    report = run_sweep(engine, published, queued=None, at=LATER)

    assert report.republished == [lost]
    assert report.queued is None
