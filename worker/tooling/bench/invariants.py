"""The check every `payhook bench` run ends with: each delivery has exactly one outcome, no
payment was confirmed twice, and each phase got the outcomes it must get — for payhook, and for
the reference design beside it (the same check on its own tables)."""

# Table names in these queries are fixed names of either side, never input: S608 does not apply.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select, text

from tasks.storage.tables import deliveries, orders, outcomes, payments
from worker.tooling.bench.phases import Expected


def check_invariants(engine: Engine, expected: Sequence[Expected]) -> dict[str, Any]:
    """{"ok", "problems", and the counts they were judged on}."""
    with engine.connect() as conn:
        delivery_count = conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
        outcome_count = conn.execute(select(func.count()).select_from(outcomes)).scalar_one()
        without = conn.execute(
            select(func.count())
            .select_from(deliveries.outerjoin(outcomes, outcomes.c.delivery_id == deliveries.c.id))
            .where(outcomes.c.id.is_(None))
        ).scalar_one()
        several = conn.execute(
            select(func.count()).select_from(
                select(outcomes.c.delivery_id)
                .group_by(outcomes.c.delivery_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        confirmed_twice = conn.execute(
            select(func.count()).select_from(
                select(outcomes.c.payment_id)
                .where(outcomes.c.kind == "applied")
                .where(outcomes.c.transition.like("%->confirmed"))
                .group_by(outcomes.c.payment_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        overpaid = conn.execute(
            select(func.count()).select_from(orders).where(orders.c.paid_amount > orders.c.total)
        ).scalar_one()
        unconfirmed = conn.execute(
            select(func.count()).select_from(payments).where(payments.c.state != "confirmed")
        ).scalar_one()
        phases = [_phase(conn, phase) for phase in expected if phase.side == "payhook"]
    problems = [
        f"{n} {what}"
        for n, what in (
            (without, "deliveries without an outcome"),
            (several, "deliveries with more than one outcome"),
            (confirmed_twice, "payments confirmed more than once"),
            (overpaid, "orders paid more than their total"),
            (unconfirmed, "payments the benchmark confirmed that are not confirmed"),
        )
        if n
    ]
    problems += [problem for problem in phases if problem]
    problems += _reference(engine, [phase for phase in expected if phase.side == "reference"])
    return {
        "ok": not problems,
        "problems": problems,
        "deliveries": int(delivery_count),
        "outcomes": int(outcome_count),
        "deliveries_without_outcome": int(without),
        "deliveries_with_several_outcomes": int(several),
        "payments_confirmed_twice": int(confirmed_twice),
    }


def _phase(conn: Any, phase: Expected) -> str | None:
    label = outcomes.c.kind + func.coalesce("/" + outcomes.c.reason, "")
    rows = conn.execute(
        select(label, func.count())
        .where(outcomes.c.delivery_id.between(phase.first, phase.last))
        .group_by(label)
    ).all()
    found = {str(kind): int(n) for kind, n in rows}
    if found != phase.counts:
        return f"{phase.phase}: outcomes {found}, expected {phase.counts}"
    return None


REFERENCE_CHECKS = (
    (
        "SELECT count(*) FROM ref_deliveries d LEFT JOIN ref_outcomes o ON o.delivery_id = d.id "
        "WHERE o.delivery_id IS NULL",
        "reference deliveries without an outcome",
    ),
    (
        "SELECT count(*) FROM (SELECT payment_id FROM ref_outcomes WHERE kind = 'applied' "
        "GROUP BY payment_id HAVING count(*) > 1) AS twice",
        "reference payments confirmed more than once",
    ),
    (
        "SELECT count(*) FROM ref_orders WHERE paid <> total",
        "reference orders not paid exactly their total",
    ),
)


def _reference(engine: Engine, expected: Sequence[Expected]) -> list[str]:
    """The reference design's tables: one outcome each (its primary key), none applied twice."""
    problems = []
    label = "kind || coalesce('/' || reason, '')"
    with engine.connect() as conn:
        for query, what in REFERENCE_CHECKS:
            n = int(conn.execute(text(query)).scalar_one())
            if n:
                problems.append(f"{n} {what}")
        for phase in expected:
            rows = conn.execute(
                text(
                    f"SELECT {label}, count(*) FROM ref_outcomes "
                    "WHERE delivery_id BETWEEN :a AND :b GROUP BY 1"
                ),
                {"a": phase.first, "b": phase.last},
            ).all()
            found = {str(kind): int(n) for kind, n in rows}
            if found != phase.counts:
                problems.append(
                    f"reference {phase.phase}: outcomes {found}, expected {phase.counts}"
                )
    return problems
