"""The check every `payhook bench` run ends with: the invariants of every run
(worker/tooling/invariants.py), each phase got the outcomes it must get — for payhook, and for
the reference design beside it (the same expectations on its own tables)."""

# Table names in these queries are fixed names of either side, never input: S608 does not apply.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select, text

from tasks.storage.tables import outcomes, payments
from worker.tooling.bench.phases import Expected
from worker.tooling.invariants import check


def check_invariants(engine: Engine, expected: Sequence[Expected]) -> dict[str, Any]:
    """{"ok", "problems", and the counts they were judged on}."""
    with engine.connect() as conn:
        findings = check(conn)
        unconfirmed = conn.execute(
            select(func.count()).select_from(payments).where(payments.c.state != "confirmed")
        ).scalar_one()
        phases = [_phase(conn, phase) for phase in expected if phase.side == "payhook"]
    problems = findings.failures()
    if unconfirmed:
        problems.append(f"{unconfirmed} payments the benchmark confirmed that are not confirmed")
    problems += [problem for problem in phases if problem]
    problems += _reference(engine, [phase for phase in expected if phase.side == "reference"])
    return {
        "ok": not problems,
        "problems": problems,
        "deliveries": findings.deliveries,
        "outcomes": findings.outcomes,
        "deliveries_without_outcome": findings.without_outcome,
        "deliveries_with_several_outcomes": len(findings.several_outcomes),
        "payments_confirmed_twice": len(findings.applied_twice),
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
