"""Retention: raw bodies are kept for a while, outcomes for good."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from domain.outcomes import OutcomeKind, Reason
from tasks.replaying import REPLAYABLE
from tasks.storage.tables import deliveries, outcomes
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
            ids = list(
                uow.connection.execute(
                    select(deliveries.c.id)
                    .join(outcomes, outcomes.c.delivery_id == deliveries.c.id)
                    .where(deliveries.c.received_at < cutoff)
                    .where(deliveries.c.body_pruned_at.is_(None))
                    .where(outcomes.c.kind.in_(_PRUNABLE))
                    # A body that did not parse is kept for the parser that will understand it.
                    .where(
                        outcomes.c.reason.is_(None)
                        | (outcomes.c.reason != Reason.MALFORMED_EVENT.value)
                    )
                    .order_by(deliveries.c.id)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                uow.connection.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(ids))
                    .values(body=b"", headers="{}", body_pruned_at=now)
                )
            uow.commit()
        pruned += len(ids)
        if len(ids) < batch:
            break
    return pruned
