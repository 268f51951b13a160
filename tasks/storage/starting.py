"""PostgreSQL: the start mark, which also records a copy of an event processed before.

Most copies of an event a provider sends again arrive after the first was processed: its claim
is committed. The receiver stored what each delivery's event means (`deliveries.fingerprint`),
so the task's first statement, the start mark it runs anyway, can see that the event's claim
is held by another delivery with the same meaning: it then records the copy
`acknowledged_duplicate/same_event`, pointing at that delivery, and marks it processed, in the
same statement, which commits as it runs. One round trip where the full path takes six (the
mark, BEGIN, lock, claim, record, COMMIT); the outcome is the one the full path would record.

- A claim seen by the statement is committed, and a committed claim is never given back: a
  claim is released only in the transaction that made it (a deferral, an `unmatched` or `dead`
  outcome), so such a claim is never seen. A claim not committed yet is not seen either: that
  copy takes the full path, whose claim waits for it.
- Only a delivery still open is marked (`status` rechecked after waiting for a running
  attempt's row lock): one recorded meanwhile by another run gets nothing more.
- A copy that means something else (a payload conflict), one of an event payhook does not act
  on, one stored before migration 0008, and one past its budget of lost attempts (recorded
  `dead` by the task) take the full path, as before.
- The mark alone does not wait for the disk (`synchronous_commit` off for its transaction, see
  `_FLUSH`); a mark that records an outcome does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    String,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    true,
    update,
)

from domain.outcomes import OutcomeKind, Reason
from tasks.storage.tables import UtcDateTime, deliveries, idempotency_keys, outcomes

_NOW = bindparam("now", type_=UtcDateTime)
# The first delivery of this delivery's event, when its claim is committed and means the same.
_FIRST_OF_SAME_MEANING = (
    select(idempotency_keys.c.first_delivery_id)
    .where(idempotency_keys.c.provider == deliveries.c.provider)
    .where(idempotency_keys.c.event_id == deliveries.c.event_id)
    .where(idempotency_keys.c.fingerprint == deliveries.c.fingerprint)
    .where(idempotency_keys.c.first_delivery_id != deliveries.c.id)
    .correlate(deliveries)
    .scalar_subquery()
)
_SEEN = (
    select(deliveries.c.id, _FIRST_OF_SAME_MEANING.label("first"))
    .where(deliveries.c.id == bindparam("delivery_id"))
    .cte("seen")
)
# The start mark alone, a statement committed on its own, does not wait for the disk: it turns
# synchronous_commit off for its own transaction only (set_config's is_local). Every other
# session sees the mark at once, which is all a count of lost attempts needs, and the processing
# transaction's commit, which does wait, flushes it with its own changes (as does PostgreSQL's
# WAL writer within a fraction of a second). A crash of PostgreSQL before either can lose the
# mark, and with it the count of one lost attempt: a delivery that kills its worker would get
# one attempt more. Half the time of the statement (a commit's flush, ~0.15 ms). A mark that
# records a copy's outcome waits, as every outcome's commit does.
_FLUSH = select(
    _SEEN.c.id,
    _SEEN.c.first,
    func.set_config(
        "synchronous_commit", case((_SEEN.c.first.is_(None), "off"), else_="on"), true()
    ).label("synchronous_commit"),
).subquery("flush")
# An earlier attempt still marked started was lost; a copy is recorded only within the budget.
_LOST_BEFORE = deliveries.c.redeliveries + case((deliveries.c.started_at.is_not(None), 1), else_=0)
_MAX_LOST = bindparam("max_lost", type_=BigInteger)
_COPY = _FLUSH.c.first.is_not(None) & (_LOST_BEFORE <= _MAX_LOST)
_MARKED = (
    update(deliveries)
    .where(deliveries.c.id == _FLUSH.c.id)
    .where(deliveries.c.status != "processed")
    .where(_FLUSH.c.synchronous_commit.is_not(None))
    .values(
        redeliveries=_LOST_BEFORE,
        suspected_at=None,
        started_at=case((_COPY, None), else_=_NOW),
        status=case((_COPY, "processed"), else_=deliveries.c.status),
        attempts=deliveries.c.attempts + case((_COPY, 1), else_=0),
        next_attempt_at=case((_COPY, None), else_=deliveries.c.next_attempt_at),
    )
    .returning(
        deliveries.c.id,
        deliveries.c.redeliveries,
        deliveries.c.provider,
        deliveries.c.event_id,
        deliveries.c.received_at,
        deliveries.c.replayed_at,
        # Only a copy is processed by its start mark (the WHERE took only open deliveries).
        case((deliveries.c.status == "processed", _FLUSH.c.first)).label("duplicate_of"),
    )
    .cte("marked")
)
_RECORDED = (
    insert(outcomes)
    .from_select(
        ["delivery_id", "kind", "reason", "duplicate_of", "recorded_at"],
        select(
            _MARKED.c.id,
            literal(OutcomeKind.ACKNOWLEDGED_DUPLICATE.value, String),
            literal(Reason.SAME_EVENT.value, String),
            _MARKED.c.duplicate_of,
            _NOW,
        ).where(_MARKED.c.duplicate_of.is_not(None)),
    )
    .cte("recorded")
)
START_SEEING_COPIES = select(_MARKED).add_cte(_RECORDED)


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt marked started: the attempts lost before it; and, when the mark recorded the
    delivery a copy (PostgreSQL only), the delivery it is a copy of, with what its outcome
    needs."""

    delivery_id: int
    lost: int
    duplicate_of: int | None = None
    provider: str = ""
    event_id: str = ""
    waiting_since: datetime | None = None
