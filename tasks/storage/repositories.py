"""Repositories over one connection; the unit of work owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from domain.events import EventKey
from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.payments import Dispute, DisputeStatus, Order, Payment, PaymentState
from tasks.storage.records import DeliveryRecord
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


def insert_ignoring_conflicts(conn: Connection, table: Any) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database: {conn.dialect.name}")


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
    ) -> int:
        result = self._conn.execute(
            insert(deliveries)
            .values(
                provider=provider,
                event_id=event_id,
                event_type=event_type,
                received_at=received_at,
                status="received",
                attempts=0,
                sweeps=0,
                redeliveries=0,
                next_attempt_at=received_at,
                published_at=received_at,
                headers=headers,
                body=body,
            )
            .returning(deliveries.c.id)
        )
        return int(result.scalar_one())

    def lock(self, delivery_id: int) -> DeliveryRecord | None:
        """The delivery, locked for this transaction, with its outcome if it has one."""
        row = self._conn.execute(
            select(deliveries).where(deliveries.c.id == delivery_id).with_for_update()
        ).one_or_none()
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
            received_at=row.received_at,
            replayed_at=row.replayed_at,
            redeliveries=row.redeliveries,
            status=row.status,
            attempts=row.attempts,
            headers=row.headers,
            body=row.body,
            outcome=outcome,
        )

    def _outcome(self, delivery_id: int) -> Outcome | None:
        row = self._conn.execute(
            select(
                outcomes.c.kind,
                outcomes.c.reason,
                outcomes.c.transition,
                outcomes.c.payment_id,
                outcomes.c.duplicate_of,
            ).where(outcomes.c.delivery_id == delivery_id)
        ).one_or_none()
        return None if row is None else outcome_from_row(row)

    def defer(self, delivery_id: int, next_attempt_at: datetime) -> None:
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .where(deliveries.c.status != "processed")
            .values(
                status="deferred",
                attempts=deliveries.c.attempts + 1,
                next_attempt_at=next_attempt_at,
                started_at=None,
            )
        )

    def mark_processed(self, delivery_id: int) -> None:
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                status="processed",
                attempts=deliveries.c.attempts + 1,
                next_attempt_at=None,
                started_at=None,
            )
        )

    def start(self, delivery_id: int, now: datetime) -> int | None:
        """Mark an attempt started; the attempts lost so far, counting an earlier one that
        started and never finished. None when there is nothing to start (processed, unknown).

        One statement: it waits for a running attempt's lock and then sees it finished.
        """
        row = self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .where(deliveries.c.status != "processed")
            .values(
                started_at=now,
                suspected_at=None,
                redeliveries=deliveries.c.redeliveries
                + case((deliveries.c.started_at.is_not(None), 1), else_=0),
            )
            .returning(deliveries.c.redeliveries)
        ).one_or_none()
        return None if row is None else int(row.redeliveries)

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


class IdempotencyKeys:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def claim(self, key: EventKey, delivery_id: int, fingerprint: str, now: datetime) -> bool:
        """True when this delivery is the first to claim the event; waits for a rival claim."""
        statement = insert_ignoring_conflicts(self._conn, idempotency_keys).values(
            provider=key.provider,
            event_id=key.event_id,
            first_delivery_id=delivery_id,
            fingerprint=fingerprint,
            claimed_at=now,
        )
        # RETURNING, not rowcount: SQLAlchemy does not promise rowcount for this statement.
        won = self._conn.execute(statement.returning(idempotency_keys.c.event_id)).first()
        return won is not None

    def first(self, key: EventKey) -> tuple[int, str]:
        """(first delivery id, body fingerprint) of a claimed event."""
        row = self._conn.execute(
            select(idempotency_keys.c.first_delivery_id, idempotency_keys.c.fingerprint)
            .where(idempotency_keys.c.provider == key.provider)
            .where(idempotency_keys.c.event_id == key.event_id)
        ).one()
        return int(row.first_delivery_id), str(row.fingerprint)


class Payments:
    """Orders and their payments; locks are always taken order first, then payment."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add_order(self, *, reference: str, total: int, currency: str, now: datetime) -> int:
        result = self._conn.execute(
            insert(orders)
            .values(
                reference=reference,
                total=total,
                currency=currency,
                paid_amount=0,
                refunded_amount=0,
                created_at=now,
            )
            .returning(orders.c.id)
        )
        return int(result.scalar_one())

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
        result = self._conn.execute(
            insert(payments)
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
        )
        return int(result.scalar_one())

    def find_order(self, reference: str) -> Order | None:
        row = self._conn.execute(
            select(orders).where(orders.c.reference == reference)
        ).one_or_none()
        if row is None:
            return None
        return Order(
            row.id, row.reference, row.total, row.currency, row.paid_amount, row.refunded_amount
        )

    def lock_by_reference(
        self, provider: str, reference: str, *, with_history: bool = True
    ) -> tuple[Order, Payment] | None:
        """The payment registered under `reference`, or known under it as an alias.

        `with_history=False` leaves out its refunds and disputes, for events that need neither.
        """
        aliased = select(payment_aliases.c.payment_id).where(
            payment_aliases.c.provider == provider, payment_aliases.c.alias == reference
        )
        matching = (
            select(payments.c.id)
            .where(payments.c.provider == provider)
            .where((payments.c.provider_reference == reference) | payments.c.id.in_(aliased))
            .order_by(payments.c.id)
            .limit(1)
            .scalar_subquery()
        )
        return self._lock(payments.c.id == matching, with_history)

    def add_alias(self, provider: str, alias: str, payment_id: int) -> None:
        """Remember another reference of a payment; the first payment to claim it keeps it."""
        self._conn.execute(
            insert_ignoring_conflicts(self._conn, payment_aliases).values(
                provider=provider, alias=alias, payment_id=payment_id
            )
        )

    def lock(self, payment_id: int) -> tuple[Order, Payment] | None:
        return self._lock(payments.c.id == payment_id, with_history=True)

    def _lock(self, which: Any, with_history: bool) -> tuple[Order, Payment] | None:
        # Always the order first, then the payment: every path locks in this order, so two
        # transactions on one payment wait for each other and never deadlock.
        order_row = self._conn.execute(
            select(orders)
            .where(orders.c.id == select(payments.c.order_id).where(which).scalar_subquery())
            .with_for_update()
        ).one_or_none()
        if order_row is None:
            return None
        row = self._conn.execute(select(payments).where(which).with_for_update()).one()
        refund_rows: Any = ()
        dispute_rows: Any = ()
        if with_history:
            refund_rows = self._conn.execute(
                select(refunds.c.refund_reference, refunds.c.amount).where(
                    refunds.c.payment_id == row.id
                )
            )
            dispute_rows = self._conn.execute(
                select(disputes.c.dispute_reference, disputes.c.amount, disputes.c.status).where(
                    disputes.c.payment_id == row.id
                )
            )
        order = Order(
            order_row.id,
            order_row.reference,
            order_row.total,
            order_row.currency,
            order_row.paid_amount,
            order_row.refunded_amount,
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
            {r.refund_reference: r.amount for r in refund_rows},
            {d.dispute_reference: Dispute(d.amount, DisputeStatus(d.status)) for d in dispute_rows},
        )
        return order, payment

    def save(self, order: Order, payment: Payment, before: Payment, now: datetime) -> None:
        """Write what the domain changed; `before` is the payment as it was loaded."""
        self._conn.execute(
            update(orders)
            .where(orders.c.id == order.id)
            .values(paid_amount=order.paid_amount, refunded_amount=order.refunded_amount)
        )
        self._conn.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(
                state=payment.state.value,
                confirmed_by=payment.confirmed_by,
                refunded_amount=payment.refunded_amount,
                updated_at=now,
            )
        )
        new_refunds = [
            {"payment_id": payment.id, "refund_reference": ref, "amount": amount, "created_at": now}
            for ref, amount in payment.refunds.items()
            if ref not in before.refunds
        ]
        if new_refunds:
            self._conn.execute(insert(refunds), new_refunds)
        reversed_refunds = [ref for ref in before.refunds if ref not in payment.refunds]
        if reversed_refunds:
            self._conn.execute(
                delete(refunds)
                .where(refunds.c.payment_id == payment.id)
                .where(refunds.c.refund_reference.in_(reversed_refunds))
            )
        for ref, dispute in payment.disputes.items():
            earlier = before.disputes.get(ref)
            if earlier is None:
                self._conn.execute(
                    insert(disputes).values(
                        payment_id=payment.id,
                        dispute_reference=ref,
                        amount=dispute.amount,
                        status=dispute.status.value,
                        opened_at=now,
                        updated_at=now,
                    )
                )
            elif earlier.status is not dispute.status:
                self._conn.execute(
                    update(disputes)
                    .where(disputes.c.payment_id == payment.id)
                    .where(disputes.c.dispute_reference == ref)
                    .values(status=dispute.status.value, updated_at=now)
                )


class Outcomes:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, delivery_id: int, outcome: Outcome, now: datetime) -> None:
        self._conn.execute(
            insert(outcomes).values(
                delivery_id=delivery_id,
                kind=outcome.kind.value,
                reason=None if outcome.reason is None else outcome.reason.value,
                transition=outcome.transition,
                payment_id=outcome.payment_id,
                duplicate_of=outcome.duplicate_of,
                recorded_at=now,
            )
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
