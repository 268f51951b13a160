"""The read side: what the API and the command line show, as plain JSON-ready dicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, or_, select

from domain.events import MalformedEvent
from domain.providers import parse_delivery
from tasks.storage.repositories import order_from_row
from tasks.storage.tables import (
    deliveries,
    orders,
    outcomes,
    payment_aliases,
    payments,
    replaced_outcomes,
)

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
        "disputed_amount": row.disputed_amount,
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


def order(conn: Connection, reference: str) -> dict[str, Any] | None:
    row = conn.execute(select(orders).where(orders.c.reference == reference)).one_or_none()
    if row is None:
        return None
    # The domain says what paid means; the read side only shows it.
    model = order_from_row(row)
    return {
        "id": row.id,
        "reference": row.reference,
        "total": row.total,
        "currency": row.currency,
        "status": model.status.value,
        "paid_amount": row.paid_amount,
        "refunded_amount": row.refunded_amount,
        "disputed_amount": row.disputed_amount,
        "overpaid_amount": model.overpaid_amount,
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


def payments_by_reference(
    conn: Connection, reference: str, provider: str | None = None
) -> list[dict[str, Any]]:
    """Payments whose provider reference, or an alias learned later (a Stripe charge id), is
    `reference`."""
    aliased = select(payment_aliases.c.payment_id).where(payment_aliases.c.alias == reference)
    direct = payments.c.provider_reference == reference
    if provider is not None:
        aliased = aliased.where(payment_aliases.c.provider == provider)
        direct = direct & (payments.c.provider == provider)
    query = _payment_select().where(or_(direct, payments.c.id.in_(aliased)))
    return [_payment(row) for row in conn.execute(query.order_by(payments.c.id))]


def payment_history(
    conn: Connection, payment_id: int, *, scan: int = 10_000
) -> list[dict[str, Any]]:
    """Every delivery about one payment, oldest first, each with the outcomes a replay replaced.

    Found three ways: an outcome (or a replaced one) names the payment; a duplicate points at
    such a delivery; or the delivery names the payment's reference but has no outcome about it
    yet (waiting, `unmatched`, `dead`) - those are parsed from the `scan` newest candidates.
    """
    payment_row = conn.execute(
        select(payments.c.provider, payments.c.provider_reference).where(
            payments.c.id == payment_id
        )
    ).one_or_none()
    if payment_row is None:
        return []
    replaced_ids = select(replaced_outcomes.c.delivery_id).where(
        replaced_outcomes.c.payment_id == payment_id
    )
    ids = set(
        conn.execute(
            select(deliveries.c.id)
            .select_from(deliveries.outerjoin(outcomes, outcomes.c.delivery_id == deliveries.c.id))
            .where(or_(outcomes.c.payment_id == payment_id, deliveries.c.id.in_(replaced_ids)))
        ).scalars()
    )
    ids |= _naming_reference(conn, payment_row.provider, payment_row.provider_reference, scan)
    if ids:
        ids |= set(
            conn.execute(
                select(outcomes.c.delivery_id).where(outcomes.c.duplicate_of.in_(sorted(ids)))
            ).scalars()
        )
    if not ids:
        return []
    rows = [
        _delivery(row)
        for row in conn.execute(
            _delivery_select().where(deliveries.c.id.in_(sorted(ids))).order_by(deliveries.c.id)
        )
    ]
    earlier: dict[int, list[dict[str, Any]]] = {}
    for old in conn.execute(
        select(replaced_outcomes)
        .where(replaced_outcomes.c.delivery_id.in_(sorted(ids)))
        .order_by(replaced_outcomes.c.id)
    ):
        earlier.setdefault(old.delivery_id, []).append(
            {**(_outcome(old) or {}), "replaced_at": _iso(old.replaced_at)}
        )
    for row in rows:
        row["replaced_outcomes"] = earlier.get(row["id"], [])
    return rows


def _naming_reference(conn: Connection, provider: str, reference: str, scan: int) -> set[int]:
    """Deliveries without an outcome about any payment whose event names `reference`."""
    candidates = (
        select(deliveries.c.id, deliveries.c.event_id, deliveries.c.body)
        .select_from(deliveries.outerjoin(outcomes, outcomes.c.delivery_id == deliveries.c.id))
        .where(deliveries.c.provider == provider)
        .where(or_(outcomes.c.id.is_(None), outcomes.c.kind.in_(("unmatched", "dead"))))
        .order_by(deliveries.c.id.desc())
        .limit(scan)
    )
    found = set()
    for row in conn.execute(candidates):
        try:
            event = parse_delivery(provider, row.event_id, bytes(row.body))
        except MalformedEvent:
            continue
        if event.payment_reference == reference:
            found.add(int(row.id))
    return found


def delivery_stats(
    conn: Connection, *, since: datetime, provider: str | None = None
) -> dict[str, Any]:
    """Deliveries received since `since`: counts by provider, status and outcome, and the
    processing lag (outcome recorded minus received, or minus replayed for a replayed delivery)
    as p50/p95/p99 per provider, computed here so that SQLite and PostgreSQL agree."""
    joined = deliveries.outerjoin(outcomes, outcomes.c.delivery_id == deliveries.c.id)
    window = [deliveries.c.received_at >= since]
    if provider is not None:
        window.append(deliveries.c.provider == provider)
    group = (deliveries.c.provider, deliveries.c.status, outcomes.c.kind, outcomes.c.reason)
    counts = [
        {"provider": p, "status": s, "kind": k, "reason": r, "count": int(n)}
        for p, s, k, r, n in conn.execute(
            select(*group, func.count())
            .select_from(joined)
            .where(*window)
            .group_by(*group)
            .order_by(*group)
        )
    ]
    lags: dict[str, list[float]] = {}
    for p, received_at, replayed_at, recorded_at in conn.execute(_timings().where(*window)):
        lag = (recorded_at - (replayed_at or received_at)).total_seconds()
        lags.setdefault(p, []).append(max(0.0, lag))
    everything = [lag for values in lags.values() for lag in values]
    lag_table = {p: lag_summary(values) for p, values in sorted(lags.items())}
    if len(lags) > 1:
        lag_table["all"] = lag_summary(everything)
    return {
        "since": _iso(since),
        "provider": provider,
        "deliveries": sum(row["count"] for row in counts),
        "counts": counts,
        "lag_seconds": lag_table,
    }


def lag_summary(values: Sequence[float]) -> dict[str, float | int]:
    """Count, nearest-rank p50/p95/p99 and max of `values` (seconds)."""
    ordered = sorted(values)
    summary: dict[str, float | int] = {"count": len(ordered)}
    if not ordered:
        return summary
    for p in (50, 95, 99):
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        summary[f"p{p}"] = round(ordered[rank - 1], 3)
    summary["max"] = round(ordered[-1], 3)
    return summary


def _timings() -> Select[Any]:
    """Provider, received, replayed and recorded times of processed deliveries."""
    return select(
        deliveries.c.provider,
        deliveries.c.received_at,
        deliveries.c.replayed_at,
        outcomes.c.recorded_at,
    ).select_from(deliveries.join(outcomes, outcomes.c.delivery_id == deliveries.c.id))
