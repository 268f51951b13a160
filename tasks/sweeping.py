"""The sweeper: no delivery that got a 2xx waits forever for its outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from domain.outcomes import Reason
from tasks.policy import RetryPolicy
from tasks.processing import record_failure
from tasks.storage.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class SweepReport:
    republished: list[int]
    dead: list[int]


def sweep(
    uow: UnitOfWork, now: datetime, policy: RetryPolicy, publish: Callable[[int], None]
) -> SweepReport:
    """Re-publish deliveries whose attempt is overdue (a lost publish, a broker restarted
    without persistence, a killed worker); record `dead` those re-published too often."""
    with uow:
        overdue = uow.deliveries.waiting_since(now - policy.sweep_after, policy.sweep_batch)
        republish = [d for d, sweeps in overdue if sweeps < policy.max_sweeps]
        for delivery_id in republish:
            uow.deliveries.mark_republished(delivery_id, now)
        uow.commit()
    dead = [d for d, sweeps in overdue if sweeps >= policy.max_sweeps]
    for delivery_id in dead:
        record_failure(delivery_id, uow, now, Reason.RETRY_BUDGET_EXHAUSTED)
    # Publish after the commit: a publish that is lost again is simply found again next time.
    for delivery_id in republish:
        publish(delivery_id)
    return SweepReport(republish, dead)
