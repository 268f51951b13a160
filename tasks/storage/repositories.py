"""Repositories over one connection; the unit of work owns the transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Insert,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from domain.events import Action, EventKey, PaymentEvent
from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.payments import (
    Dispute,
    DisputeStatus,
    Order,
    Payment,
    PaymentState,
    Refund,
    RefundStatus,
)
from tasks.storage import direct
from tasks.storage.direct import utc
from tasks.storage.errors import AlreadyExists
from tasks.storage.outbox_insert import POSTGRES_INSERT
from tasks.storage.records import DeliveryRecord
from tasks.storage.starting import START_SEEING_COPIES, Started
from tasks.storage.tables import (
    UtcDateTime,
    api_idempotency,
    deliveries,
    disputes,
    idempotency_keys,
    orders,
    outcomes,
    payment_aliases,
    payments,
    refunds,
    replaced_outcomes,
)


def outcome_from_row(row: Any) -> Outcome:
    return Outcome(
        OutcomeKind(row.kind),
        Reason(row.reason) if row.reason else None,
        row.transition,
        row.payment_id,
        row.duplicate_of,
    )


def order_from_row(row: Any) -> Order:
    """An order as the domain knows it, from a row of the orders table."""
    return Order(
        row.id,
        row.reference,
        row.total,
        row.currency,
        row.paid_amount,
        row.refunded_amount,
        row.disputed_amount,
    )


def insert_ignoring_conflicts(conn: Connection, table: Any) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect."""
    return _insert_ignoring_conflicts(conn.dialect.name, table)


@cache
def _insert_ignoring_conflicts(dialect: str, table: Any) -> Insert:
    # One statement object per dialect and table: SQLAlchemy memoizes a statement's cache key
    # on the object, so a statement built once is neither rebuilt nor re-keyed per delivery.
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database: {dialect}")


# The statements of a delivery's hot path, built once with named parameters (see above): building
# and keying them anew for every delivery cost about a third of a worker's CPU per delivery, and
# a third of the receiver's.
_NEW_DELIVERY_COLUMNS = (
    "provider",
    "event_id",
    "event_type",
    "received_at",
    "status",
    "attempts",
    "sweeps",
    "redeliveries",
    "next_attempt_at",
    "published_at",
    "headers",
    "body",
    "fingerprint",
)
ADD_DELIVERY = (
    insert(deliveries)
    .values({name: bindparam(name) for name in _NEW_DELIVERY_COLUMNS})
    .returning(deliveries.c.id)
)
_LOCK_DELIVERY = (
    select(deliveries).where(deliveries.c.id == bindparam("delivery_id")).with_for_update()
)
_DELIVERY_OUTCOME = select(
    outcomes.c.kind,
    outcomes.c.reason,
    outcomes.c.transition,
    outcomes.c.payment_id,
    outcomes.c.duplicate_of,
).where(outcomes.c.delivery_id == bindparam("delivery_id"))
_MARK_PROCESSED = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(
        status="processed",
        attempts=deliveries.c.attempts + 1,
        next_attempt_at=None,
        started_at=None,
    )
)
_RECORD_OUTCOME = insert(outcomes).values(
    delivery_id=bindparam("delivery_id"),
    kind=bindparam("kind"),
    reason=bindparam("reason"),
    transition=bindparam("transition"),
    payment_id=bindparam("payment_id"),
    duplicate_of=bindparam("duplicate_of"),
    recorded_at=bindparam("recorded_at"),
)
# PostgreSQL: the outcome and the processed mark in one round trip (a data-modifying WITH runs
# whether or not the statement reads it); SQLite runs the two statements.
_FINISH = _MARK_PROCESSED.add_cte(_RECORD_OUTCOME.cte("recorded"))
# Deferred deliveries waiting on a payment's state, or for a payment known under a reference,
# marked to be published now. SKIP LOCKED: a delivery locked right now is being processed, and
# sees the new state once this transaction commits; waiting for it could deadlock with its
# payment lock.
_WAKE_AWAITING = (
    update(deliveries)
    .where(
        deliveries.c.id.in_(
            select(deliveries.c.id)
            .where(deliveries.c.status == "deferred")
            .where(
                (deliveries.c.awaiting_payment_id == bindparam("of_payment"))
                | (
                    (deliveries.c.provider == bindparam("of_provider"))
                    & (deliveries.c.awaiting_reference == bindparam("of_reference"))
                )
            )
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        # `received` again: published now, and covered by the sweeper if that is lost (it
        # counts a lost message from the time of this publish, not of the first).
        status="received",
        next_attempt_at=bindparam("now", type_=deliveries.c.next_attempt_at.type),
        published_at=bindparam("now", type_=deliveries.c.published_at.type),
    )
    .returning(deliveries.c.id)
)
# PostgreSQL: the outcome, the processed mark and the wake in one round trip; the woken ids come
# back as one array (the woken rows are deferred ones, never the delivery being finished).
_WOKEN = _WAKE_AWAITING.cte("woken")
_FINISH_WAKING = _FINISH.add_cte(_WOKEN).returning(
    select(func.array_agg(_WOKEN.c.id)).scalar_subquery().label("woken")
)
# … and the host's notifications of the change (outbox_insert.py), in the same round trip.
_FINISH_WAKING_TELLING = _FINISH_WAKING.add_cte(POSTGRES_INSERT.columns().cte("told"))
_START = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .where(deliveries.c.status != "processed")
    .values(
        started_at=bindparam("now", type_=deliveries.c.started_at.type),
        suspected_at=None,
        redeliveries=deliveries.c.redeliveries
        + case((deliveries.c.started_at.is_not(None), 1), else_=0),
    )
    .returning(deliveries.c.redeliveries)
)
_FIRST_CLAIM = (
    select(idempotency_keys.c.first_delivery_id, idempotency_keys.c.fingerprint)
    .where(idempotency_keys.c.provider == bindparam("provider"))
    .where(idempotency_keys.c.event_id == bindparam("event_id"))
)
# The payment registered under the reference, or known under it as an alias (the lowest id if
# both): two index lookups, where one WHERE with an OR read every payment of the provider. An
# alias names a payment of its own provider (add_alias learns it from that provider's event).
_PAYMENT_BY_REFERENCE = (
    union_all(
        select(payments.c.id.label("id")).where(
            payments.c.provider == bindparam("provider"),
            payments.c.provider_reference == bindparam("reference"),
        ),
        select(payment_aliases.c.payment_id.label("id")).where(
            payment_aliases.c.provider == bindparam("provider"),
            payment_aliases.c.alias == bindparam("reference"),
        ),
    )
    .order_by("id")
    .limit(1)
    .scalar_subquery()
)
_PAYMENT_BY_ID: BindParameter[int] = bindparam("payment_id", type_=payments.c.id.type)
_SAVE_ORDER = (
    update(orders)
    .where(orders.c.id == bindparam("of_order"))
    .values(
        paid_amount=bindparam("order_paid", type_=orders.c.paid_amount.type),
        refunded_amount=bindparam("order_refunded", type_=orders.c.refunded_amount.type),
        disputed_amount=bindparam("order_disputed", type_=orders.c.disputed_amount.type),
    )
)
_SAVE_PAYMENT = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .values(
        state=bindparam("new_state", type_=payments.c.state.type),
        confirmed_by=bindparam("new_confirmed_by", type_=payments.c.confirmed_by.type),
        refunded_amount=bindparam("new_refunded", type_=payments.c.refunded_amount.type),
        disputed_amount=bindparam("new_disputed", type_=payments.c.disputed_amount.type),
        updated_at=bindparam("now", type_=payments.c.updated_at.type),
    )
)
# PostgreSQL: the order and the payment written in one round trip, and the payment's new alias.
_SAVE_BOTH = _SAVE_PAYMENT.add_cte(_SAVE_ORDER.cte("saved_order"))
_SAVE_BOTH_LEARNING = _SAVE_BOTH.add_cte(
    postgresql.insert(payment_aliases)
    .values(
        provider=bindparam("alias_provider"),
        alias=bindparam("alias"),
        payment_id=bindparam("alias_payment"),
    )
    .on_conflict_do_nothing()
    .cte("learned")
)


_ORDER_COLUMNS = [column.label(f"o_{column.name}") for column in orders.c]


def _locks(which: Any) -> Any:
    """One locking read of a payment picked by `which` and of its order, in one round trip.

    FOR UPDATE OF orders, payments: every path that locks a payment locks it with its order
    through this one statement, so two transactions on one payment (or one order) take the same
    locks the same way, wait for each other and never deadlock.
    """
    return (
        select(*_ORDER_COLUMNS, payments)
        .select_from(orders.join(payments, payments.c.order_id == orders.c.id))
        .where(which)
        .with_for_update(of=[orders, payments])
    )


_LOCKS_BY_REFERENCE = _locks(payments.c.id == _PAYMENT_BY_REFERENCE)
_LOCKS_BY_ID = _locks(payments.c.id == _PAYMENT_BY_ID)
_REFUNDS = select(refunds.c.refund_reference, refunds.c.amount, refunds.c.status).where(
    refunds.c.payment_id == bindparam("payment_id")
)
_DISPUTES = select(
    disputes.c.dispute_reference,
    disputes.c.amount,
    disputes.c.status,
    disputes.c.withdrawn,
    disputes.c.stage,
).where(disputes.c.payment_id == bindparam("payment_id"))


def intake_fingerprint(event: PaymentEvent) -> str | None:
    """What a delivery's event means, stored with it as it is received: None for one payhook
    does not act on (an unsupported type, or a body that did not parse), whose copies take the
    full path."""
    return None if event.action is Action.UNSUPPORTED else event.fingerprint()


def new_delivery(
    provider: str,
    event_id: str,
    event_type: str,
    received_at: datetime,
    headers: str,
    body: bytes,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """ADD_DELIVERY's parameters for a delivery just received: published at once (after its
    commit), nothing attempted yet."""
    return {
        "provider": provider,
        "event_id": event_id,
        "event_type": event_type,
        "received_at": received_at,
        "status": "received",
        "attempts": 0,
        "sweeps": 0,
        "redeliveries": 0,
        "next_attempt_at": received_at,
        "published_at": received_at,
        "headers": headers,
        "body": body,
        "fingerprint": fingerprint,
    }


class Deliveries:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(
        self,
        *,
        provider: str,
        event_id: str,
        event_type: str,
        received_at: datetime,
        headers: str,
        body: bytes,
        fingerprint: str | None = None,
    ) -> int:
        """Store a delivery just received: published at once, nothing attempted yet. Its id."""
        row = new_delivery(provider, event_id, event_type, received_at, headers, body, fingerprint)
        (added,) = direct.rows(self._conn, ADD_DELIVERY, row)
        return int(added.id)

    def lock(self, delivery_id: int) -> DeliveryRecord | None:
        """The delivery, locked for this transaction, with its outcome if it has one."""
        row = direct.one_or_none(self._conn, _LOCK_DELIVERY, {"delivery_id": delivery_id})
        if row is None:
            return None
        # The outcome in a statement of its own, after the lock: in PostgreSQL a statement that
        # waited for the lock sees the locked row as committed meanwhile, but every other row
        # (a joined outcome) as of its snapshot, taken before the wait. A delivery has an outcome
        # exactly when it is processed, so the first run of a delivery needs no second query.
        outcome = self._outcome(delivery_id) if row.status == "processed" else None
        return DeliveryRecord(
            id=row.id,
            provider=row.provider,
            event_id=row.event_id,
            event_type=row.event_type,
            received_at=utc(row.received_at) or row.received_at,
            replayed_at=utc(row.replayed_at),
            redeliveries=row.redeliveries,
            status=row.status,
            attempts=row.attempts,
            headers=row.headers,
            body=row.body,
            outcome=outcome,
        )

    def _outcome(self, delivery_id: int) -> Outcome | None:
        row = direct.one_or_none(self._conn, _DELIVERY_OUTCOME, {"delivery_id": delivery_id})
        return None if row is None else outcome_from_row(row)

    def defer(
        self,
        delivery_id: int,
        next_attempt_at: datetime,
        *,
        awaiting_payment_id: int | None = None,
        awaiting_reference: str | None = None,
    ) -> None:
        """Let the delivery wait in the database until `next_attempt_at`, or until what it
        waits for (a payment's new state, a payment registered under a reference) wakes it."""
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .where(deliveries.c.status != "processed")
            .values(
                status="deferred",
                attempts=deliveries.c.attempts + 1,
                next_attempt_at=next_attempt_at,
                awaiting_payment_id=awaiting_payment_id,
                awaiting_reference=awaiting_reference,
                started_at=None,
            )
        )

    def wake_due(self, now: datetime, limit: int) -> list[int]:
        """Deferred deliveries whose next attempt has come, marked to be published now."""
        return self._wake(
            (deliveries.c.status == "deferred") & (deliveries.c.next_attempt_at <= now), now, limit
        )

    def wake_awaiting(
        self,
        now: datetime,
        *,
        payment_id: int | None = None,
        provider: str | None = None,
        reference: str | None = None,
    ) -> list[int]:
        """Deferred deliveries waiting on this payment's state, or for a payment known under
        `provider`'s `reference`, marked to be published now: one statement."""
        woken = direct.rows(
            self._conn,
            _WAKE_AWAITING,
            {
                "of_payment": payment_id,
                "of_provider": provider,
                "of_reference": reference,
                "now": now,
            },
        )
        return [int(row.id) for row in woken]

    def _wake(self, which: Any, now: datetime, limit: int) -> list[int]:
        # SKIP LOCKED, as in _WAKE_AWAITING.
        query = (
            select(deliveries.c.id)
            .where(which)
            .order_by(deliveries.c.next_attempt_at)
            .with_for_update(skip_locked=True)
        )
        ids = [int(i) for i in self._conn.execute(query.limit(limit)).scalars()]
        if ids:
            # `received` again, as in _WAKE_AWAITING.
            self._conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(status="received", next_attempt_at=now, published_at=now)
            )
        return ids

    def finish(
        self,
        delivery_id: int,
        outcome: Outcome,
        now: datetime,
        *,
        wake_payment_id: int | None = None,
        wake_provider: str | None = None,
        wake_reference: str | None = None,
        telling: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Record the delivery's one outcome and mark it processed; with something to wake
        (see `wake_awaiting`), the deliveries waiting on it are woken too: their ids. On
        PostgreSQL `telling` (Outbox.take) writes the change's notifications in the same
        statement."""
        waking = wake_payment_id is not None or wake_reference is not None
        values = {
            "delivery_id": delivery_id,
            "kind": outcome.kind.value,
            "reason": None if outcome.reason is None else outcome.reason.value,
            "transition": outcome.transition,
            "payment_id": outcome.payment_id,
            "duplicate_of": outcome.duplicate_of,
            "recorded_at": now,
        }
        if self._conn.dialect.name == "postgresql" and waking:
            wake = {
                "of_payment": wake_payment_id,
                "of_provider": wake_provider,
                "of_reference": wake_reference,
                "now": now,
            }
            if telling is not None:
                statement, wake = _FINISH_WAKING_TELLING, {**wake, **telling}
            else:
                statement = _FINISH_WAKING
            (row,) = direct.rows(self._conn, statement, {**values, **wake})
            return [int(i) for i in row.woken or ()]
        if self._conn.dialect.name == "postgresql":
            direct.rows(self._conn, _FINISH, values)
            return []
        woken = (
            self.wake_awaiting(
                now, payment_id=wake_payment_id, provider=wake_provider, reference=wake_reference
            )
            if waking
            else []
        )
        self._conn.execute(_RECORD_OUTCOME, values)
        self._conn.execute(_MARK_PROCESSED, values)
        return woken

    def start(self, delivery_id: int, now: datetime, max_lost: int) -> Started | None:
        """Mark an attempt started; the attempts lost so far, counting an earlier one that
        started and never finished. None when there is nothing to start (processed, unknown).

        One statement: it waits for a running attempt's lock and then sees it finished. Run
        on its own (autocommit) on PostgreSQL, it is committed without waiting for the disk,
        and records a copy of an event processed before, within `max_lost` lost attempts
        (starting.py).
        """
        params = {"delivery_id": delivery_id, "now": now}
        if not _on_its_own(self._conn):
            row = direct.one_or_none(self._conn, _START, params)
            return None if row is None else Started(delivery_id, int(row.redeliveries))
        row = direct.one_or_none(self._conn, START_SEEING_COPIES, {**params, "max_lost": max_lost})
        if row is None:
            return None
        return Started(
            delivery_id,
            int(row.redeliveries),
            duplicate_of=row.duplicate_of,
            provider=row.provider,
            event_id=row.event_id,
            waiting_since=utc(row.replayed_at or row.received_at),
        )

    def release(self, delivery_id: int, published_at: datetime) -> None:
        """An attempt that ended without an outcome (it retries at `published_at`): not lost."""
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .where(deliveries.c.status != "processed")
            .values(started_at=None, published_at=published_at)
        )

    def mark_republished(self, delivery_ids: list[int], now: datetime) -> None:
        if not delivery_ids:
            return
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(delivery_ids))
            .values(
                sweeps=deliveries.c.sweeps + 1,
                next_attempt_at=now,
                published_at=now,
                suspected_at=None,
            )
        )

    def suspect(self, delivery_ids: list[int], now: datetime) -> None:
        if not delivery_ids:
            return
        self._conn.execute(
            update(deliveries).where(deliveries.c.id.in_(delivery_ids)).values(suspected_at=now)
        )

    def reopen(self, delivery_id: int, now: datetime) -> None:
        """Move the delivery's outcome to the audit trail and let it be processed again."""
        self._conn.execute(
            insert(replaced_outcomes).from_select(
                [
                    "delivery_id",
                    "kind",
                    "reason",
                    "transition",
                    "payment_id",
                    "duplicate_of",
                    "recorded_at",
                    "replaced_at",
                ],
                select(
                    outcomes.c.delivery_id,
                    outcomes.c.kind,
                    outcomes.c.reason,
                    outcomes.c.transition,
                    outcomes.c.payment_id,
                    outcomes.c.duplicate_of,
                    outcomes.c.recorded_at,
                    literal(now, UtcDateTime()),
                ).where(outcomes.c.delivery_id == delivery_id),
            )
        )
        self._conn.execute(delete(outcomes).where(outcomes.c.delivery_id == delivery_id))
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                status="received",
                sweeps=0,
                redeliveries=0,
                replayed_at=now,
                next_attempt_at=now,
                started_at=None,
                published_at=now,
                suspected_at=None,
            )
        )

    def maybe_lost(
        self, published_before: datetime, started_before: datetime, limit: int
    ) -> tuple[int, list[tuple[int, datetime | None]]]:
        """Deliveries whose task message may be lost: received (not deferred, not processed),
        last published before `published_before`, and not started since, or started before
        `started_before` (longer ago than an attempt may run). How many, and (id, suspected
        at) of the `limit` published longest ago."""
        which = (
            (deliveries.c.status == "received")
            & (deliveries.c.published_at < published_before)
            & (deliveries.c.started_at.is_(None) | (deliveries.c.started_at < started_before))
        )
        total = self._conn.execute(select(func.count()).where(which)).scalar_one()
        rows = self._conn.execute(
            select(deliveries.c.id, deliveries.c.suspected_at)
            .where(which)
            .order_by(deliveries.c.published_at)
            .limit(limit)
        )
        return int(total), [(row.id, row.suspected_at) for row in rows]


@cache
def _claim(dialect: str) -> Insert:
    # RETURNING, not rowcount: SQLAlchemy does not promise rowcount for this statement.
    return (
        _insert_ignoring_conflicts(dialect, idempotency_keys)
        .values(
            provider=bindparam("provider"),
            event_id=bindparam("event_id"),
            first_delivery_id=bindparam("first_delivery_id"),
            fingerprint=bindparam("fingerprint"),
            claimed_at=bindparam("claimed_at"),
        )
        .returning(idempotency_keys.c.first_delivery_id, idempotency_keys.c.fingerprint)
    )


# PostgreSQL: the claim, or the claim that holds the event already, in one round trip. The
# holder is read in the statement's snapshot: one committed while the INSERT waited for it is
# not in it, and `claim` then reads it in a statement of its own.
_CLAIMED = _claim("postgresql").cte("claimed")
_CLAIM_OR_HOLDER = select(
    _CLAIMED.c.first_delivery_id, _CLAIMED.c.fingerprint, true().label("won")
).union_all(
    select(
        idempotency_keys.c.first_delivery_id,
        idempotency_keys.c.fingerprint,
        false().label("won"),
    )
    .where(idempotency_keys.c.provider == bindparam("provider"))
    .where(idempotency_keys.c.event_id == bindparam("event_id"))
    .where(~exists(select(_CLAIMED.c.first_delivery_id)))
)


@cache
def _add_alias(dialect: str) -> Insert:
    return _insert_ignoring_conflicts(dialect, payment_aliases).values(
        provider=bindparam("provider"),
        alias=bindparam("alias"),
        payment_id=bindparam("payment_id"),
    )


_RELEASE_CLAIMS = delete(idempotency_keys).where(
    idempotency_keys.c.first_delivery_id == bindparam("delivery_id")
)


class IdempotencyKeys:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def claim(
        self, key: EventKey, delivery_id: int, fingerprint: str, now: datetime
    ) -> tuple[int, str] | None:
        """None when this delivery is the first to claim the event; otherwise (first delivery
        id, body fingerprint) of the claim that holds it. Waits for a rival claim."""
        values = {
            "provider": key.provider,
            "event_id": key.event_id,
            "first_delivery_id": delivery_id,
            "fingerprint": fingerprint,
            "claimed_at": now,
        }
        if self._conn.dialect.name == "postgresql":
            found = direct.rows(self._conn, _CLAIM_OR_HOLDER, values)
            if found and found[0].won:
                return None
            if found:
                return int(found[0].first_delivery_id), str(found[0].fingerprint)
        elif direct.rows(self._conn, _claim(self._conn.dialect.name), values):
            return None
        return self.first(key)

    def release(self, delivery_id: int) -> None:
        """Give back the claims this delivery holds: it waits, or ended unmatched or dead, so
        the provider's resend of its event (or its own next attempt) starts afresh."""
        direct.rows(self._conn, _RELEASE_CLAIMS, {"delivery_id": delivery_id})

    def first(self, key: EventKey) -> tuple[int, str]:
        """(first delivery id, body fingerprint) of a claimed event."""
        row = direct.one_or_none(
            self._conn, _FIRST_CLAIM, {"provider": key.provider, "event_id": key.event_id}
        )
        if row is None:
            raise LookupError(f"no claim of {key}")
        return int(row.first_delivery_id), str(row.fingerprint)


class Payments:
    """Orders and their payments; locks are always taken order first, then payment."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add_order(self, *, reference: str, total: int, currency: str, now: datetime) -> int:
        """The new order's id; AlreadyExists when its reference is taken."""
        result = self._conn.execute(
            insert_ignoring_conflicts(self._conn, orders)
            .values(
                reference=reference,
                total=total,
                currency=currency,
                paid_amount=0,
                refunded_amount=0,
                created_at=now,
            )
            .returning(orders.c.id)
        ).scalar_one_or_none()
        if result is None:
            raise AlreadyExists(f"order {reference!r} already exists")
        return int(result)

    def add_payment(
        self,
        *,
        order_id: int,
        provider: str,
        provider_reference: str,
        amount: int,
        currency: str,
        now: datetime,
    ) -> int:
        """The new payment's id; AlreadyExists when the provider's reference is taken."""
        result = self._conn.execute(
            insert_ignoring_conflicts(self._conn, payments)
            .values(
                order_id=order_id,
                provider=provider,
                provider_reference=provider_reference,
                amount=amount,
                currency=currency,
                state=PaymentState.PENDING.value,
                refunded_amount=0,
                created_at=now,
                updated_at=now,
            )
            .returning(payments.c.id)
        ).scalar_one_or_none()
        if result is None:
            raise AlreadyExists(f"payment {provider}/{provider_reference} already exists")
        return int(result)

    def find_order(self, reference: str) -> Order | None:
        row = self._conn.execute(
            select(orders).where(orders.c.reference == reference)
        ).one_or_none()
        if row is None:
            return None
        return order_from_row(row)

    def lock_by_reference(
        self, provider: str, reference: str, *, with_history: bool = True
    ) -> tuple[Order, Payment] | None:
        """The payment registered under `reference`, or known under it as an alias.

        `with_history=False` leaves out its refunds and disputes, for events that need neither.
        """
        picked = {"provider": provider, "reference": reference}
        return self._lock(_LOCKS_BY_REFERENCE, picked, with_history)

    def add_alias(self, provider: str, alias: str, payment_id: int) -> None:
        """Remember another reference of a payment; the first payment to claim it keeps it."""
        direct.rows(
            self._conn,
            _add_alias(self._conn.dialect.name),
            {"provider": provider, "alias": alias, "payment_id": payment_id},
        )

    def lock(self, payment_id: int) -> tuple[Order, Payment] | None:
        return self._lock(_LOCKS_BY_ID, {"payment_id": payment_id}, with_history=True)

    def _lock(
        self, locks: Any, picked: dict[str, Any], with_history: bool
    ) -> tuple[Order, Payment] | None:
        # The order and its payment locked together, by the one statement every path uses.
        row = direct.one_or_none(self._conn, locks, picked)
        if row is None:
            return None
        refund_rows: Any = ()
        dispute_rows: Any = ()
        if with_history:
            refund_rows = direct.rows(self._conn, _REFUNDS, {"payment_id": row.id})
            dispute_rows = direct.rows(self._conn, _DISPUTES, {"payment_id": row.id})
        order = Order(
            row.o_id,
            row.o_reference,
            row.o_total,
            row.o_currency,
            row.o_paid_amount,
            row.o_refunded_amount,
            row.o_disputed_amount,
        )
        payment = Payment(
            row.id,
            row.order_id,
            row.provider,
            row.provider_reference,
            row.amount,
            row.currency,
            PaymentState(row.state),
            row.confirmed_by,
            row.refunded_amount,
            {r.refund_reference: Refund(r.amount, RefundStatus(r.status)) for r in refund_rows},
            {
                d.dispute_reference: Dispute(
                    d.amount, DisputeStatus(d.status), d.withdrawn, d.stage
                )
                for d in dispute_rows
            },
            row.disputed_amount,
        )
        return order, payment

    def save(
        self,
        order: Order,
        payment: Payment,
        before: Payment,
        now: datetime,
        *,
        alias: str | None = None,
    ) -> None:
        """Write what the domain changed; `before` is the payment as it was loaded. `alias`:
        another reference of the payment to remember (see `add_alias`)."""
        order_values = {
            "of_order": order.id,
            "order_paid": order.paid_amount,
            "order_refunded": order.refunded_amount,
            "order_disputed": order.disputed_amount,
        }
        payment_values = {
            "payment_id": payment.id,
            "new_state": payment.state.value,
            "new_confirmed_by": payment.confirmed_by,
            "new_refunded": payment.refunded_amount,
            "new_disputed": payment.disputed_amount,
            "now": now,
        }
        if self._conn.dialect.name == "postgresql" and alias is not None:
            learned = {
                "alias_provider": payment.provider,
                "alias": alias,
                "alias_payment": payment.id,
            }
            direct.rows(
                self._conn, _SAVE_BOTH_LEARNING, {**payment_values, **order_values, **learned}
            )
        elif self._conn.dialect.name == "postgresql":
            direct.rows(self._conn, _SAVE_BOTH, {**payment_values, **order_values})
        else:
            self._conn.execute(_SAVE_ORDER, order_values)
            self._conn.execute(_SAVE_PAYMENT, payment_values)
            if alias is not None:
                self.add_alias(payment.provider, alias, payment.id)
        new_refunds = [
            {
                "payment_id": payment.id,
                "refund_reference": ref,
                "amount": refund.amount,
                "status": refund.status.value,
                "created_at": now,
            }
            for ref, refund in payment.refunds.items()
            if ref not in before.refunds
        ]
        if new_refunds:
            self._conn.execute(insert(refunds), new_refunds)
        for ref, refund in payment.refunds.items():
            was = before.refunds.get(ref)
            if was is not None and was.status is not refund.status:
                self._conn.execute(
                    update(refunds)
                    .where(refunds.c.payment_id == payment.id)
                    .where(refunds.c.refund_reference == ref)
                    .values(status=refund.status.value)
                )
        for ref, dispute in payment.disputes.items():
            earlier = before.disputes.get(ref)
            values = {
                "amount": dispute.amount,
                "status": dispute.status.value,
                "withdrawn": dispute.withdrawn,
                "stage": dispute.stage,
                "updated_at": now,
            }
            if earlier is None:
                self._conn.execute(
                    insert(disputes).values(
                        payment_id=payment.id, dispute_reference=ref, opened_at=now, **values
                    )
                )
            elif earlier != dispute:
                self._conn.execute(
                    update(disputes)
                    .where(disputes.c.payment_id == payment.id)
                    .where(disputes.c.dispute_reference == ref)
                    .values(**values)
                )


class ApiIdempotency:
    """Answers stored per `Idempotency-Key`, so that a retried API call replays the first."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> tuple[str, str, str] | None:
        """(request fingerprint, status, response JSON) stored under `key`."""
        row = self._conn.execute(
            select(api_idempotency).where(api_idempotency.c.key == key)
        ).one_or_none()
        return None if row is None else (row.request_fingerprint, row.status, row.response)

    def store(self, key: str, fingerprint: str, status: str, response: str, now: datetime) -> bool:
        """False when a concurrent request stored an answer under the same key first."""
        statement = insert_ignoring_conflicts(self._conn, api_idempotency).values(
            key=key,
            request_fingerprint=fingerprint,
            status=status,
            response=response,
            created_at=now,
        )
        return self._conn.execute(statement.returning(api_idempotency.c.key)).first() is not None


class Bodies:
    """Raw bodies and headers of deliveries, emptied once retention is over."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def prunable(self, received_before: datetime, kinds: list[str], limit: int) -> list[int]:
        """Ids of processed deliveries with an outcome of `kinds` whose body is still stored."""
        return list(
            self._conn.execute(
                select(deliveries.c.id)
                .join(outcomes, outcomes.c.delivery_id == deliveries.c.id)
                .where(deliveries.c.received_at < received_before)
                .where(deliveries.c.body_pruned_at.is_(None))
                .where(outcomes.c.kind.in_(kinds))
                # A body that did not parse is kept for the parser that will understand it.
                .where(
                    outcomes.c.reason.is_(None)
                    | (outcomes.c.reason != Reason.MALFORMED_EVENT.value)
                )
                .order_by(deliveries.c.id)
                .limit(limit)
            ).scalars()
        )

    def prune(self, delivery_ids: list[int], now: datetime) -> None:
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(delivery_ids))
            .values(body=b"", headers="{}", body_pruned_at=now)
        )


def _on_its_own(conn: Connection) -> bool:
    """A PostgreSQL connection in autocommit: each statement its own transaction."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(getattr(conn.connection.driver_connection, "autocommit", False))
