"""The sweeper: no delivery that got a 2xx waits forever for its outcome, and none merely
queued behind a backlog is published twice or given up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.policy import RetryPolicy
from tasks.storage.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class SweepReport:
    republished: list[int]
    # Task messages waiting in the broker's queue, or None when the broker could not say.
    queued: int | None


def sweep(
    uow: UnitOfWork,
    now: datetime,
    policy: RetryPolicy,
    publish: Callable[[int], None],
    queued: Callable[[], int | None],
) -> SweepReport:
    """Publish again the deliveries whose task message is lost (a publish that failed, a broker
    restarted without persistence, a worker killed with it), each at most once per
    `sweep_after`.

    A delivery published longer ago than that and not started since is either lost or still
    queued: the broker's queue is first in, first out, so the newest of them, as many as the
    queue holds messages, may be queued and are left alone; the others look lost. One that
    looks lost is published only if it still does a task time limit later: a message that a
    worker has taken but not started yet (its processes busy, with this very sweep perhaps)
    starts within that time.
    The sweeper never records a delivery dead: only a worker does, once it has started and
    lost the delivery's attempts `max_sweeps` times (tasks/processing.py, `start_attempt`).
    """
    attempt_limit = timedelta(seconds=policy.time_limit_s)
    depth = queued()
    with uow:
        waiting, oldest = uow.deliveries.maybe_lost(
            now - policy.sweep_after, now - attempt_limit - policy.sweep_after, policy.sweep_batch
        )
        looks_lost = oldest[: max(0, waiting - (depth or 0))]
        # Long enough for a worker that took the message to start it: one task's time limit.
        confirmed = now - attempt_limit
        lost = [d for d, seen in looks_lost if seen is not None and seen <= confirmed]
        uow.deliveries.suspect([d for d, suspected in looks_lost if suspected is None], now)
        uow.deliveries.mark_republished(lost, now)
        uow.commit()
    # Publish after the commit: a publish that is lost again is simply found again next time.
    for delivery_id in lost:
        publish(delivery_id)
    return SweepReport(lost, depth)
