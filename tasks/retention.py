"""Retention: raw bodies are kept for a while, outcomes for good."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.outcomes import OutcomeKind
from tasks.replaying import REPLAYABLE
from tasks.storage.uow import UnitOfWork

# Bodies an operator may still need to replay are never pruned.
_PRUNABLE = [kind.value for kind in OutcomeKind if kind not in REPLAYABLE]


def prune_bodies(
    uow: UnitOfWork, now: datetime, keep: timedelta, *, batch: int = 1000, max_batches: int = 100
) -> int:
    """Empty the stored body and headers of processed deliveries received before `now - keep`.

    Works in batches, each its own short transaction, so that pruning never holds locks long.
    Returns how many deliveries were pruned.
    """
    cutoff = now - keep
    pruned = 0
    for _ in range(max_batches):
        with uow:
            ids = uow.bodies.prunable(cutoff, _PRUNABLE, batch)
            if ids:
                uow.bodies.prune(ids, now)
            uow.commit()
        pruned += len(ids)
        if len(ids) < batch:
            break
    return pruned
