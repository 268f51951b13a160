"""Readable tables for operators."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def deliveries_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in (
        "id",
        "provider",
        "event",
        "type",
        "received",
        "status",
        "outcome",
        "payment",
        "dup of",
    ):
        table.add_column(column)
    for row in rows:
        outcome = row["outcome"] or {}
        kind = outcome.get("kind") or "-"
        label = f"{kind}/{outcome['reason']}" if outcome.get("reason") else kind
        if outcome.get("transition"):
            label += f" {outcome['transition']}"
        table.add_row(
            str(row["id"]),
            row["provider"],
            row["event_id"],
            row["event_type"],
            (row["received_at"] or "")[:19],
            row["status"],
            label,
            str(outcome.get("payment_id") or "-"),
            str(outcome.get("duplicate_of") or "-"),
        )
    return table
