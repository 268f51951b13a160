"""Replay: run a delivery again through the same idempotent path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from domain.outcomes import Outcome, OutcomeKind, Reason
from tasks.storage.uow import UnitOfWork

# Outcomes that a later attempt could change: the payment may exist now, the bug may be fixed.
REPLAYABLE = frozenset({OutcomeKind.UNMATCHED, OutcomeKind.DEAD})


def replayable(outcome: Outcome) -> bool:
    """Unmatched, dead, or a stored body that did not parse (payhook may understand it now)."""
    return outcome.kind in REPLAYABLE or outcome.reason is Reason.MALFORMED_EVENT


@dataclass(frozen=True, slots=True)
class Replay:
    delivery_id: int
    replayed: bool
    why: str


def replay_delivery(
    delivery_id: int, uow: UnitOfWork, now: datetime, publish: Callable[[int], object]
) -> Replay | None:
    """Reopen an `unmatched`, `dead` or malformed delivery, or hurry one still waiting; None if
    unknown.

    Any other outcome stays as it is: a replay of an applied delivery changes nothing.
    """
    with uow:
        delivery = uow.deliveries.lock(delivery_id)
        if delivery is None:
            return None
        if delivery.outcome is not None and not replayable(delivery.outcome):
            return Replay(
                delivery_id,
                False,
                f"it already has the outcome {delivery.outcome.kind.value}; "
                "a replay would change nothing",
            )
        was = "waiting" if delivery.outcome is None else delivery.outcome.kind.value
        uow.deliveries.reopen(delivery_id, now)
        uow.commit()
    publish(delivery_id)  # after the commit, like the receiver; the sweeper covers a failure
    return Replay(delivery_id, True, f"was {was}; published again")
