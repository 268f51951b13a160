"""The schema; Alembic migrations in tasks/migrations create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both engines (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("payhook stores aware datetimes only")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value
        return result.replace(tzinfo=UTC) if result.tzinfo is None else result.astimezone(UTC)


def _timestamp(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=nullable)


deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("provider", String(64), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    _timestamp("received_at"),
    Column("status", String(16), nullable=False),  # received | deferred | processed
    Column("attempts", Integer, nullable=False, default=0),
    Column("sweeps", Integer, nullable=False, default=0),  # re-publications by the sweeper
    # Attempts a worker started and never finished (killed, crashed, lost with its broker).
    Column("redeliveries", Integer, nullable=False, default=0, server_default="0"),
    _timestamp("next_attempt_at", nullable=True),
    # Set while a worker's attempt runs: still set at the next start, that attempt was lost.
    _timestamp("started_at", nullable=True),
    # The last publish of its task message (receipt, a sweep, a replay, a retry's due time).
    _timestamp("published_at", nullable=True),
    # The sweep that first found it neither started nor queued; the next one publishes it.
    _timestamp("suspected_at", nullable=True),
    # A replay restarts the wait for a payment from here instead of from received_at.
    _timestamp("replayed_at", nullable=True),
    Column("headers", Text, nullable=False),  # JSON: only the headers that matter
    Column("body", LargeBinary, nullable=False),
    # What the event means (PaymentEvent.fingerprint), as the receiver parsed it; None for an
    # event payhook does not act on, or one stored before migration 0008. A copy whose event's
    # claim holds the same is a duplicate at its start mark (starting.py).
    Column("fingerprint", String(64), nullable=True),
    # Set when retention emptied body and headers; the outcome is kept for good.
    _timestamp("body_pruned_at", nullable=True),
    # What a deferred delivery waits for, so that it is woken when it comes: the payment
    # that has not reached the state its event needs, or the reference of a payment the host
    # has not registered yet.
    Column("awaiting_payment_id", Id, nullable=True),
    Column("awaiting_reference", String(255), nullable=True),
    Index(None, "status", "next_attempt_at"),
    Index(None, "status", "published_at"),
    Index(None, "provider", "event_id"),
    Index(None, "awaiting_payment_id"),
    Index(None, "provider", "awaiting_reference"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("reference", String(255), nullable=False, unique=True),
    Column("total", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("paid_amount", BigInteger, nullable=False, default=0),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    _timestamp("created_at"),
    # Taken by disputes (chargebacks) and not given back.
    Column("disputed_amount", BigInteger, nullable=False, default=0, server_default="0"),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", Id, ForeignKey("orders.id"), nullable=False, index=True),
    Column("provider", String(64), nullable=False),
    Column("provider_reference", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(16), nullable=False),
    Column("confirmed_by", Id, ForeignKey("deliveries.id"), nullable=True),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Column("disputed_amount", BigInteger, nullable=False, default=0, server_default="0"),
    UniqueConstraint("provider", "provider_reference"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=False),
    Column("refund_reference", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
    _timestamp("created_at"),
    # succeeded | failed: a failure is kept, so that a success delivered after it never counts.
    Column("status", String(16), nullable=False, default="succeeded", server_default="succeeded"),
    UniqueConstraint("payment_id", "refund_reference"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("first_delivery_id", Id, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False),
    _timestamp("claimed_at"),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # Exactly one outcome per delivery, whatever the broker redelivers.
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("transition", String(64), nullable=True),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=True, index=True),
    Column("duplicate_of", Id, nullable=True),
    _timestamp("recorded_at"),
    Index(None, "kind", "reason"),
)

api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("response", Text, nullable=False),
    _timestamp("created_at"),
)

disputes = Table(
    "disputes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=False),
    Column("dispute_reference", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | won | lost
    _timestamp("opened_at"),
    _timestamp("updated_at"),
    # What the dispute has taken and not given back, and the provider's stage it is at.
    Column("withdrawn", BigInteger, nullable=False, default=0, server_default="0"),
    Column("stage", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("payment_id", "dispute_reference"),
)

payment_aliases = Table(
    "payment_aliases",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("alias", String(255), primary_key=True),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=False, index=True),
)

# Outcomes that a replay replaced: the audit trail keeps every decision ever recorded.
replaced_outcomes = Table(
    "replaced_outcomes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("transition", String(64), nullable=True),
    Column("payment_id", Id, nullable=True),
    Column("duplicate_of", Id, nullable=True),
    _timestamp("recorded_at"),
    _timestamp("replaced_at"),
)

# The outbox: one row per state change the host is told of, written in the transaction that made
# the change. On PostgreSQL the id encodes the inserting transaction (see tasks/storage/outbox.py).
# No foreign keys: the rows it names are locked or written by that same transaction, and each
# check would cost the hot path a lookup per row (the outbox must stay cheap per delivery).
notifications = Table(
    "notifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("order_id", Id, nullable=False),
    # 1, 2, 3… per order, in commit order: assigned under the order's row lock.
    Column("order_sequence", BigInteger, nullable=False),
    Column("payment_id", Id, nullable=False),
    Column("delivery_id", Id, nullable=True),
    Column("data", Text, nullable=False),  # JSON: the message's data, less order_sequence
    _timestamp("created_at"),
    UniqueConstraint("order_id", "order_sequence"),
)

# Each endpoint of PAYHOOK_NOTIFY_URL, as the relay first met it.
notify_endpoints = Table(
    "notify_endpoints",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("url", String(2048), nullable=False, unique=True),
    # Notifications created since then are pushed to it; those before it are not.
    _timestamp("since"),
    # Every notification up to this id has its send row for this endpoint.
    Column("materialized_through", BigInteger, nullable=False, default=0),
)

# One notification pushed to one endpoint: pending, delivered (2xx) or failed (replayable).
notification_sends = Table(
    "notification_sends",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("notification_id", Id, ForeignKey("notifications.id"), nullable=False),
    Column("endpoint_id", Id, ForeignKey("notify_endpoints.id"), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    # Retried until PAYHOOK_NOTIFY_RETRY_S after this (its first try, or an operator's resend).
    _timestamp("retry_from"),
    # The next try; while a relay holds the send, the end of its lease.
    _timestamp("next_attempt_at"),
    _timestamp("last_attempt_at", nullable=True),
    Column("last_status", Integer, nullable=True),  # the endpoint's HTTP status
    Column("last_error", String(255), nullable=True),
    _timestamp("delivered_at", nullable=True),
    UniqueConstraint("notification_id", "endpoint_id"),
    Index(None, "endpoint_id", "status", "next_attempt_at"),
)
