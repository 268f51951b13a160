"""The read side: what the API and the command line show, as plain JSON-ready dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, select

from tasks.storage.tables import deliveries, orders, outcomes, payments

MAX_PAGE = 1000


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _outcome(row: Any) -> dict[str, Any] | None:
    if row.kind is None:
        return None
    return {
        "kind": row.kind,
        "reason": row.reason,
        "transition": row.transition,
        "payment_id": row.payment_id,
        "duplicate_of": row.duplicate_of,
        "recorded_at": _iso(row.recorded_at),
    }


def _delivery_select() -> Select[Any]:
    return select(
        deliveries.c.id,
        deliveries.c.provider,
        deliveries.c.event_id,
        deliveries.c.event_type,
        deliveries.c.received_at,
        deliveries.c.status,
        deliveries.c.attempts,
        outcomes.c.kind,
        outcomes.c.reason,
        outcomes.c.transition,
        outcomes.c.payment_id,
        outcomes.c.duplicate_of,
        outcomes.c.recorded_at,
    ).select_from(deliveries.outerjoin(outcomes, outcomes.c.delivery_id == deliveries.c.id))


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "provider": row.provider,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "received_at": _iso(row.received_at),
        "status": row.status,
        "attempts": row.attempts,
        "outcome": _outcome(row),
    }


def delivery(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    row = conn.execute(_delivery_select().where(deliveries.c.id == delivery_id)).one_or_none()
    return None if row is None else _delivery(row)


def delivery_raw(conn: Connection, delivery_id: int) -> tuple[str, bytes] | None:
    """(headers JSON, body) as received, for operators."""
    row = conn.execute(
        select(deliveries.c.headers, deliveries.c.body).where(deliveries.c.id == delivery_id)
    ).one_or_none()
    return None if row is None else (row.headers, bytes(row.body))


def list_deliveries(
    conn: Connection,
    *,
    status: str | None = None,
    provider: str | None = None,
    outcome: str | None = None,
    payment_id: int | None = None,
    since: datetime | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `before` (a delivery id) pages through older ones."""
    query = _delivery_select()
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if provider is not None:
        query = query.where(deliveries.c.provider == provider)
    if outcome is not None:
        query = query.where(outcomes.c.kind == outcome)
    if payment_id is not None:
        query = query.where(outcomes.c.payment_id == payment_id)
    if since is not None:
        query = query.where(deliveries.c.received_at >= since)
    if before is not None:
        query = query.where(deliveries.c.id < before)
    query = query.order_by(deliveries.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    return [_delivery(row) for row in conn.execute(query)]


def _payment(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "order_reference": row.order_reference,
        "provider": row.provider,
        "provider_reference": row.provider_reference,
        "amount": row.amount,
        "currency": row.currency,
        "state": row.state,
        "refunded_amount": row.refunded_amount,
        "confirmed_by": row.confirmed_by,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def _payment_select() -> Select[Any]:
    return select(payments, orders.c.reference.label("order_reference")).join(
        orders, orders.c.id == payments.c.order_id
    )


def payment(conn: Connection, payment_id: int) -> dict[str, Any] | None:
    row = conn.execute(_payment_select().where(payments.c.id == payment_id)).one_or_none()
    if row is None:
        return None
    view = _payment(row)
    view["outcomes"] = [
        {"delivery_id": o.delivery_id, **(_outcome(o) or {})}
        for o in conn.execute(
            select(outcomes).where(outcomes.c.payment_id == payment_id).order_by(outcomes.c.id)
        )
    ]
    return view


def payment_id_by_reference(conn: Connection, provider: str, reference: str) -> int | None:
    value = conn.execute(
        select(payments.c.id)
        .where(payments.c.provider == provider)
        .where(payments.c.provider_reference == reference)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def order(conn: Connection, reference: str) -> dict[str, Any] | None:
    row = conn.execute(select(orders).where(orders.c.reference == reference)).one_or_none()
    if row is None:
        return None
    net = row.paid_amount - row.refunded_amount
    return {
        "id": row.id,
        "reference": row.reference,
        "total": row.total,
        "currency": row.currency,
        "status": "paid" if net >= row.total else "pending",
        "paid_amount": row.paid_amount,
        "refunded_amount": row.refunded_amount,
        "overpaid_amount": max(0, net - row.total),
        "created_at": _iso(row.created_at),
        "payments": [
            _payment(p)
            for p in conn.execute(
                _payment_select().where(payments.c.order_id == row.id).order_by(payments.c.id)
            )
        ],
    }


def outcome_counts(conn: Connection) -> dict[str, int]:
    """Outcomes by `kind/reason`, plus deliveries still waiting."""
    counts: dict[str, int] = {}
    query = select(outcomes.c.kind, outcomes.c.reason, func.count()).group_by(
        outcomes.c.kind, outcomes.c.reason
    )
    for kind, reason, count in conn.execute(query):
        counts[f"{kind}/{reason}" if reason else kind] = int(count)
    waiting = conn.execute(
        select(func.count()).select_from(deliveries).where(deliveries.c.status != "processed")
    ).scalar_one()
    counts["waiting"] = int(waiting)
    return counts
