"""The check every `payhook bench` run ends with: the invariants of every run, and each phase
got the outcomes it must get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from tasks.storage.tables import outcomes, payments
from worker.tooling.bench.phases import Expected
from worker.tooling.invariants import check


def check_invariants(engine: Engine, expected: Sequence[Expected]) -> dict[str, Any]:
    """{"ok", "problems", and the counts they were judged on}: the invariants every run must
    keep (worker/tooling/invariants.py), then what this benchmark's phases must have."""
    with engine.connect() as conn:
        findings = check(conn)
        unconfirmed = conn.execute(
            select(func.count()).select_from(payments).where(payments.c.state != "confirmed")
        ).scalar_one()
        phases = [_phase(conn, phase) for phase in expected]
    problems = findings.failures()
    if unconfirmed:
        problems.append(f"{unconfirmed} payments the benchmark confirmed that are not confirmed")
    problems += [problem for problem in phases if problem]
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
