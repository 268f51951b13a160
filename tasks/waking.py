"""Waking: a deferred delivery waits in the database until its time comes, or until what it
waits for happens; then it is published again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tasks.policy import RetryPolicy
from tasks.storage.uow import UnitOfWork


def wake_due(
    uow: UnitOfWork, now: datetime, policy: RetryPolicy, publish: Callable[[int], object]
) -> list[int]:
    """Publish the deferred deliveries whose next attempt has come (the beat's backstop: a
    state change or a registered payment wakes its waiting deliveries at once)."""
    with uow:
        due = uow.deliveries.wake_due(now, policy.sweep_batch)
        uow.commit()
    # After the commit; a publish that is lost leaves a `received` delivery to the sweeper.
    for delivery_id in due:
        publish(delivery_id)
    return due
