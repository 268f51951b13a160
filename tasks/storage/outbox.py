"""The outbox: notifications written with the change they tell of, and their sends per endpoint.

Ids are in the order that never skips. On PostgreSQL a notification's id is its inserting
transaction's id times PER_TRANSACTION plus its index in that transaction, so that ids follow
transaction ids; a reader lists only ids below the oldest transaction still running (the xmin
of its snapshot) times PER_TRANSACTION. Every transaction below that horizon has finished, so
every smaller id is committed (and seen) or rolled back: a cursor never passes a notification
that commits later. On SQLite writers are serialized (BEGIN IMMEDIATE), so plain
auto-increment ids already commit in id order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Insert,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from tasks.storage import direct
from tasks.storage.outbox_insert import PER_TRANSACTION, POSTGRES_INSERT
from tasks.storage.repositories import insert_ignoring_conflicts
from tasks.storage.tables import UtcDateTime, notification_sends, notifications, notify_endpoints

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class Written:
    """A notification as the hot path writes it: its type and its data as JSON."""

    type: str
    data: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """A send that this relay holds until `lease_until`; `attempt` is its token."""

    send_id: int
    endpoint_id: int
    notification_id: int
    type: str
    created_at: datetime
    order_sequence: int
    data: str
    attempt: int
    retry_from: datetime


class Outbox:
    """The hot path's side: one INSERT per applying transaction.

    On PostgreSQL the INSERT waits until the statement that finishes the delivery takes it
    (`take`) and runs it in the same round trip, or until the unit of work commits (`flush`):
    written in the transaction either way.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._written = 0  # in this transaction, for the ids' index part
        self._staged: dict[str, Any] | None = None

    def take(self) -> dict[str, Any] | None:
        """The parameters of the INSERT waiting to run (see outbox_insert.py), now the caller's
        to run; None when none waits."""
        staged, self._staged = self._staged, None
        return staged

    def flush(self) -> None:
        """Run the INSERT that waits, if one does."""
        staged = self.take()
        if staged is not None:
            direct.rows(self._conn, POSTGRES_INSERT, staged)

    def add(
        self,
        *,
        order_id: int,
        payment_id: int,
        delivery_id: int | None,
        items: Sequence[Written],
        now: datetime,
    ) -> None:
        if not items:
            return
        if self._written + len(items) > PER_TRANSACTION:
            raise ValueError(f"more than {PER_TRANSACTION} notifications in one transaction")
        if self._conn.dialect.name == "postgresql":
            self.flush()  # one waits at a time
            self._staged = {
                "told_slot": self._written,
                "told_types": json.dumps([item.type for item in items]),
                "told_datas": json.dumps([item.data for item in items]),
                "told_order": order_id,
                "told_payment": payment_id,
                "told_delivery": delivery_id,
                "told_at": now,
            }
        else:
            rows = [
                {
                    "type": item.type,
                    "order_id": order_id,
                    "payment_id": payment_id,
                    "delivery_id": delivery_id,
                    "data": item.data,
                    "created_at": now,
                }
                for item in items
            ]
            self._conn.execute(_sqlite_insert(), rows)
        self._written += len(items)


@cache
def _sqlite_insert() -> Insert:
    """One row at a time (SQLite's writers are serialized): each sees the rows before it."""
    last = (
        select(func.coalesce(func.max(notifications.c.order_sequence), 0))
        .where(notifications.c.order_id == bindparam("order_id"))
        .scalar_subquery()
    )
    return insert(notifications).values(
        type=bindparam("type"),
        order_id=bindparam("order_id"),
        order_sequence=last + 1,
        payment_id=bindparam("payment_id"),
        delivery_id=bindparam("delivery_id"),
        data=bindparam("data"),
        created_at=bindparam("created_at", type_=UtcDateTime()),
    )


def _transaction_id() -> ColumnElement[int]:
    return cast(cast(func.pg_current_xact_id(), Text), BigInteger)


def settled(conn: Connection) -> ColumnElement[bool]:
    """Notifications every smaller id of which is committed or rolled back."""
    if conn.dialect.name != "postgresql":
        return true()
    horizon = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)
    return notifications.c.id < horizon * PER_TRANSACTION


def feed(conn: Connection, *, after: int, limit: int) -> list[Any]:
    """Settled notifications after id `after`, in id order."""
    return list(
        conn.execute(
            select(notifications)
            .where(notifications.c.id > after, settled(conn))
            .order_by(notifications.c.id)
            .limit(limit)
        )
    )


class Sends:
    """The relay's side: endpoints, their send rows, leases and results."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def endpoint(self, url: str, now: datetime, window: timedelta) -> int:
        """The endpoint's id; a new one is owed the notifications of the last `window`."""
        self._conn.execute(
            insert_ignoring_conflicts(self._conn, notify_endpoints).values(
                url=url, since=now - window, materialized_through=0
            )
        )
        return int(
            self._conn.execute(
                select(notify_endpoints.c.id).where(notify_endpoints.c.url == url)
            ).scalar_one()
        )

    def materialize(self, endpoint_id: int, now: datetime) -> int:
        """Give every settled notification not yet considered a pending send to the endpoint.

        Returns how many; 0 when another relay is doing it right now.
        """
        endpoint = self._conn.execute(
            select(notify_endpoints)
            .where(notify_endpoints.c.id == endpoint_id)
            .with_for_update(skip_locked=True)
        ).one_or_none()
        if endpoint is None:
            return 0
        mark = int(endpoint.materialized_through)
        through = self._conn.execute(
            select(func.max(notifications.c.id)).where(
                notifications.c.id > mark, settled(self._conn)
            )
        ).scalar_one()
        if through is None:
            return 0
        chosen = select(
            notifications.c.id,
            literal(endpoint_id, BigInteger),
            literal(PENDING),
            literal(0),
            literal(now, UtcDateTime()),
            literal(now, UtcDateTime()),
        ).where(
            notifications.c.id > mark,
            notifications.c.id <= through,
            notifications.c.created_at >= endpoint.since,
        )
        added = self._conn.execute(
            insert_ignoring_conflicts(self._conn, notification_sends)
            .from_select(
                [
                    "notification_id",
                    "endpoint_id",
                    "status",
                    "attempts",
                    "retry_from",
                    "next_attempt_at",
                ],
                chosen,
            )
            .returning(notification_sends.c.id)
        )
        count = len(added.all())
        self._conn.execute(
            update(notify_endpoints)
            .where(notify_endpoints.c.id == endpoint_id)
            .values(materialized_through=through)
        )
        return count

    def claim(self, endpoint_id: int, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
        """Due sends that head their order for this endpoint, leased to this relay.

        A send heads its order when every earlier notification of the order was delivered to
        this endpoint or marked failed; a send still leased or backing off holds the rest back.
        """
        earlier = notifications.alias("earlier")
        earlier_send = notification_sends.alias("earlier_send")
        since = (
            select(notify_endpoints.c.since)
            .where(notify_endpoints.c.id == endpoint_id)
            .scalar_subquery()
        )
        held_back = (
            select(earlier.c.id)
            .select_from(
                earlier.outerjoin(
                    earlier_send,
                    and_(
                        earlier_send.c.notification_id == earlier.c.id,
                        earlier_send.c.endpoint_id == endpoint_id,
                    ),
                )
            )
            .where(
                earlier.c.order_id == notifications.c.order_id,
                earlier.c.order_sequence < notifications.c.order_sequence,
                earlier.c.created_at >= since,
                or_(earlier_send.c.status.is_(None), earlier_send.c.status == PENDING),
            )
            .exists()
        )
        rows = self._conn.execute(
            select(
                notification_sends.c.id.label("send_id"),
                notification_sends.c.attempts,
                notification_sends.c.retry_from,
                notifications.c.id.label("notification_id"),
                notifications.c.type,
                notifications.c.created_at,
                notifications.c.order_sequence,
                notifications.c.data,
            )
            .select_from(
                notification_sends.join(
                    notifications, notifications.c.id == notification_sends.c.notification_id
                )
            )
            .where(
                notification_sends.c.endpoint_id == endpoint_id,
                notification_sends.c.status == PENDING,
                notification_sends.c.next_attempt_at <= now,
                ~held_back,
            )
            .order_by(notification_sends.c.next_attempt_at, notification_sends.c.id)
            .limit(limit)
            .with_for_update(of=notification_sends, skip_locked=True)
        ).all()
        if not rows:
            return []
        self._conn.execute(
            update(notification_sends)
            .where(notification_sends.c.id.in_([row.send_id for row in rows]))
            .values(
                attempts=notification_sends.c.attempts + 1,
                last_attempt_at=now,
                next_attempt_at=now + lease,
            )
        )
        return [
            Claimed(
                send_id=row.send_id,
                endpoint_id=endpoint_id,
                notification_id=row.notification_id,
                type=row.type,
                created_at=row.created_at,
                order_sequence=row.order_sequence,
                data=row.data,
                attempt=row.attempts + 1,
                retry_from=row.retry_from,
            )
            for row in rows
        ]

    def delivered(self, claimed: Claimed, status: int, now: datetime) -> None:
        self._finish(claimed, status=DELIVERED, last_status=status, delivered_at=now)

    def retry(
        self, claimed: Claimed, status: int | None, error: str, next_attempt_at: datetime
    ) -> None:
        self._finish(
            claimed,
            status=PENDING,
            last_status=status,
            last_error=error[:255],
            next_attempt_at=next_attempt_at,
        )

    def failed(self, claimed: Claimed, status: int | None, error: str) -> None:
        self._finish(claimed, status=FAILED, last_status=status, last_error=error[:255])

    def _finish(self, claimed: Claimed, **values: Any) -> None:
        # Only while this relay's lease is the latest attempt: a relay that outlived its lease
        # leaves the send to the one that took it over.
        self._conn.execute(
            update(notification_sends)
            .where(
                notification_sends.c.id == claimed.send_id,
                notification_sends.c.attempts == claimed.attempt,
                notification_sends.c.status == PENDING,
            )
            .values(**values)
        )

    def resend(self, notification_id: int, endpoint_ids: Sequence[int], now: datetime) -> int:
        """Send a notification again to the endpoints, with a fresh retry window."""
        for endpoint_id in endpoint_ids:
            self._conn.execute(
                insert_ignoring_conflicts(self._conn, notification_sends).values(
                    notification_id=notification_id,
                    endpoint_id=endpoint_id,
                    status=PENDING,
                    attempts=0,
                    retry_from=now,
                    next_attempt_at=now,
                )
            )
        result = self._conn.execute(
            update(notification_sends)
            .where(
                notification_sends.c.notification_id == notification_id,
                notification_sends.c.endpoint_id.in_(endpoint_ids),
            )
            .values(status=PENDING, retry_from=now, next_attempt_at=now, delivered_at=None)
            .returning(notification_sends.c.id)
        )
        return len(result.all())

    def exists(self, notification_id: int) -> bool:
        found = self._conn.execute(
            select(notifications.c.id).where(notifications.c.id == notification_id)
        ).first()
        return found is not None

    def failed_notifications(self, limit: int) -> list[int]:
        rows = self._conn.execute(
            select(notification_sends.c.notification_id)
            .where(notification_sends.c.status == FAILED)
            .group_by(notification_sends.c.notification_id)
            .order_by(notification_sends.c.notification_id)
            .limit(limit)
        )
        return [int(row.notification_id) for row in rows]

    def resend_failed(self, notification_id: int, now: datetime) -> int:
        result = self._conn.execute(
            update(notification_sends)
            .where(
                notification_sends.c.notification_id == notification_id,
                notification_sends.c.status == FAILED,
            )
            .values(status=PENDING, retry_from=now, next_attempt_at=now)
            .returning(notification_sends.c.id)
        )
        return len(result.all())


def listing(
    conn: Connection, *, status: str | None, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Notifications newest first, each with its sends: endpoint, status, attempts."""
    chosen = select(notifications.c.id)
    if status is not None:
        chosen = chosen.where(
            select(notification_sends.c.id)
            .where(
                notification_sends.c.notification_id == notifications.c.id,
                notification_sends.c.status == status,
            )
            .exists()
        )
    if before is not None:
        chosen = chosen.where(notifications.c.id < before)
    ids = [row.id for row in conn.execute(chosen.order_by(notifications.c.id.desc()).limit(limit))]
    if not ids:
        return []
    rows = conn.execute(
        select(notifications).where(notifications.c.id.in_(ids)).order_by(notifications.c.id.desc())
    ).all()
    sends: dict[int, list[dict[str, Any]]] = {}
    for send in conn.execute(
        select(notification_sends, notify_endpoints.c.url)
        .join(notify_endpoints, notify_endpoints.c.id == notification_sends.c.endpoint_id)
        .where(notification_sends.c.notification_id.in_(ids))
        .order_by(notify_endpoints.c.id)
    ):
        sends.setdefault(send.notification_id, []).append(
            {
                "endpoint": send.url,
                "status": send.status,
                "attempts": send.attempts,
                "last_status": send.last_status,
                "last_error": send.last_error,
                "next_attempt_at": _iso(send.next_attempt_at) if send.status == PENDING else None,
                "delivered_at": _iso(send.delivered_at),
            }
        )
    return [
        {
            "id": row.id,
            "type": row.type,
            "order_id": row.order_id,
            "order_sequence": row.order_sequence,
            "payment_id": row.payment_id,
            "delivery_id": row.delivery_id,
            "created_at": _iso(row.created_at),
            "order_reference": json.loads(row.data)["order_reference"],
            "sends": sends.get(row.id, []),
        }
        for row in rows
    ]


def backlog(conn: Connection, now: datetime) -> list[tuple[str, int, float]]:
    """Per known endpoint: (url, notifications not delivered nor failed, age of the oldest)."""
    found = []
    for endpoint in conn.execute(select(notify_endpoints)).all():
        waiting = select(notifications.c.created_at).where(
            or_(
                select(notification_sends.c.id)
                .where(
                    notification_sends.c.notification_id == notifications.c.id,
                    notification_sends.c.endpoint_id == endpoint.id,
                    notification_sends.c.status == PENDING,
                )
                .exists(),
                and_(
                    notifications.c.id > endpoint.materialized_through,
                    notifications.c.created_at >= endpoint.since,
                ),
            )
        )
        rows = waiting.subquery()
        count, oldest = conn.execute(
            select(func.count(), func.min(rows.c.created_at)).select_from(rows)
        ).one()
        age = 0.0 if oldest is None else max(0.0, (now - _aware(oldest)).total_seconds())
        found.append((endpoint.url, int(count), age))
    return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
