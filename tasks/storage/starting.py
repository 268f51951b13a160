"""PostgreSQL: the start mark that also reads its event's claim, and the duplicate recorded in
one statement.

Most copies of an event a provider sends again arrive after the first was processed: its claim
is committed. The start mark, a statement the task runs anyway, returns that claim (and the
body, only then), so that such a copy is decided without a transaction of its own: parsed,
compared with the claim's fingerprint, and recorded `acknowledged_duplicate/same_event` by one
statement that commits as it runs. Two round trips where the full path takes six (the mark,
BEGIN, lock, claim, record, COMMIT).

A claim seen by the mark is committed, and a committed claim is never given back: a claim is
released only in the transaction that made it (a deferral, an `unmatched` or `dead` outcome),
so it is never seen. The record is conditional on the delivery being still open: another run
of the same delivery that recorded its outcome meanwhile makes it record nothing, and the full
path then returns that run's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, String, bindparam, case, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from tasks.storage.tables import UtcDateTime, deliveries, idempotency_keys, outcomes


def _claim_of_this_event(column: ColumnElement[object]) -> ColumnElement[object]:
    return (
        select(column)
        .where(idempotency_keys.c.provider == deliveries.c.provider)
        .where(idempotency_keys.c.event_id == deliveries.c.event_id)
        .correlate(deliveries)
        .scalar_subquery()
    )


_HOLDER = _claim_of_this_event(idempotency_keys.c.first_delivery_id)

# What the start mark returns besides the count of lost attempts (see Deliveries.start).
SEEING_CLAIM = (
    deliveries.c.provider,
    deliveries.c.event_id,
    deliveries.c.received_at,
    deliveries.c.replayed_at,
    _HOLDER.label("claimed_by"),
    _claim_of_this_event(idempotency_keys.c.fingerprint).label("claim_fingerprint"),
    # The body only when there is a claim to compare it with: a first delivery reads it again,
    # locked, in its transaction.
    case((_HOLDER.is_not(None), deliveries.c.body)).label("body"),
)

_MARKED = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .where(deliveries.c.status != "processed")
    .values(
        status="processed",
        attempts=deliveries.c.attempts + 1,
        next_attempt_at=None,
        started_at=None,
    )
    .returning(deliveries.c.id)
    .cte("marked")
)
# The outcome, if the delivery was still open; the processed mark with it.
RECORD_IF_OPEN = (
    insert(outcomes)
    .from_select(
        ["delivery_id", "kind", "reason", "duplicate_of", "recorded_at"],
        select(
            _MARKED.c.id,
            bindparam("kind", type_=String),
            bindparam("reason", type_=String),
            bindparam("duplicate_of", type_=BigInteger),
            bindparam("recorded_at", type_=UtcDateTime),
        ),
    )
    .add_cte(_MARKED)
    .returning(outcomes.c.delivery_id)
)


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt marked started: the attempts lost before it, and what the mark saw of its
    event's claim (PostgreSQL; None elsewhere)."""

    delivery_id: int
    lost: int
    provider: str = ""
    event_id: str = ""
    waiting_since: datetime | None = None
    claimed_by: int | None = None
    claim_fingerprint: str | None = None
    body: bytes | None = None
