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


def payment_heading(payment: dict[str, Any]) -> str:
    refunded = f", {payment['refunded_amount']} refunded" if payment["refunded_amount"] else ""
    if payment.get("disputed_amount"):
        refunded += f", {payment['disputed_amount']} lost to disputes"
    return (
        f"[bold]payment {payment['id']}[/bold] {payment['provider']} "
        f"{payment['provider_reference']} (order {payment['order_reference']}): "
        f"[bold]{payment['state']}[/bold], {payment['amount']} {payment['currency']}{refunded}"
    )


def replaced_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What replays replaced: earlier outcomes stay on record."""
    lines = []
    for row in rows:
        for old in row.get("replaced_outcomes", []):
            label = f"{old['kind']}/{old['reason']}" if old.get("reason") else old["kind"]
            lines.append(
                f"  delivery {row['id']} was {label} until replayed at {old['replaced_at'][:19]}"
            )
    return lines


def stats_tables(stats: dict[str, Any]) -> list[Table]:
    counts = Table(title=f"{stats['deliveries']} deliveries since {stats['since'][:19]}")
    for column in ("provider", "status", "outcome", "count"):
        counts.add_column(column, justify="right" if column == "count" else "left")
    for row in stats["counts"]:
        kind = row["kind"] or "-"
        counts.add_row(
            row["provider"],
            row["status"],
            f"{kind}/{row['reason']}" if row["reason"] else kind,
            str(row["count"]),
        )
    lag = Table(title="processing lag: outcome recorded - received (s)")
    for column in ("provider", "outcomes", "p50", "p95", "p99", "max"):
        lag.add_column(column, justify="left" if column == "provider" else "right")
    for provider, summary in stats["lag_seconds"].items():
        lag.add_row(
            provider,
            str(summary["count"]),
            *(f"{summary[k]:.3f}" if k in summary else "-" for k in ("p50", "p95", "p99", "max")),
        )
    return [counts, lag]
