"""What `payhook bench` shows: one table, payhook and the reference side by side, and the
same figures as a JSON document. Targets are shown, never enforced."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from worker.tooling.bench.phases import Sizes

PHASE_TITLES = {
    "unique": "unique deliveries",
    "duplicates": "duplicates (100 copies of each event)",
    "hot": "a hot payment (distinct events, one payment)",
    "e2e": "end to end (worker running)",
}
CPU_ROWS = (
    ("receiver", "receiver (all its processes)"),
    ("worker_main", "worker main process"),
    ("worker_children", "worker children"),
    ("worker", "worker, main + children"),
    ("pg_receiver", "PostgreSQL, receiver's backends"),
    ("pg_worker", "PostgreSQL, worker's backends"),
    ("redis", "Redis server (shared)"),
    ("machine", "machine (all of the above)"),
    ("load", "load generator (wrk)"),
)
TARGETED = {"receiver", "worker", "machine"}  # CPU per delivery <= 1.5x the reference's
CPU_TARGET = 1.5


@dataclass(frozen=True)
class Row:
    """One line: payhook's figure `mine`, the reference's `theirs`, their ratio (or the ratio
    `over` names), and a target for the ratio or, without one, for the value."""

    label: str
    unit: str
    mine: str | None
    theirs: str | None = None
    target: float | None = None
    at_most: bool = False
    over: tuple[str, str] | None = None  # the ratio of two other figures
    section: str = ""
    on: str = "ratio"  # what the target judges: "ratio", or "payhook" (its own figure)


def rows(modes: Sequence[str], sizes: Sizes) -> list[Row]:
    listed: list[Row] = []
    for mode in modes:
        events = f"task events {mode}"
        for phase in ("unique", "duplicates", "hot", "e2e"):
            section = f"CPU per delivery, {PHASE_TITLES[phase]}, {events}"
            for key, label in CPU_ROWS:
                targeted = key in TARGETED and phase in ("unique", "e2e")
                listed.append(
                    Row(
                        f"  {label}",
                        "ms",
                        f"{mode}.payhook.{phase}.cpu_ms.{key}",
                        f"{mode}.reference.{phase}.cpu_ms.{key}",
                        CPU_TARGET if targeted else None,
                        at_most=True,
                        section=section,
                    )
                )
        section = f"rates, {events}"
        p, r = f"{mode}.payhook", f"{mode}.reference"
        listed += [
            Row(
                f"  receiver, worker paused, {sizes.unique}",
                "req/s",
                f"{p}.unique.received_per_s",
                f"{r}.unique.received_per_s",
                section=section,
            ),
            Row(
                f"  backlog of {sizes.unique} unique",
                "deliveries/s",
                f"{p}.unique.processed_per_s",
                f"{r}.unique.processed_per_s",
                section=section,
            ),
            Row(
                f"  backlog of {sizes.duplicates} duplicates",
                "deliveries/s",
                f"{p}.duplicates.processed_per_s",
                f"{r}.duplicates.processed_per_s",
                section=section,
            ),
            Row(
                f"  backlog of {sizes.hot} for one payment",
                "deliveries/s",
                f"{p}.hot.processed_per_s",
                f"{r}.hot.processed_per_s",
                section=section,
            ),
            Row(
                f"  end to end, {sizes.end_to_end}",
                "deliveries/s",
                f"{p}.e2e.per_s",
                f"{r}.e2e.per_s",
                0.67,
                section=section,
            ),
            Row(
                f"  empty-task drain, {sizes.drain} (reference app)",
                "tasks/s",
                f"{mode}.drain.per_s",
                section=section,
            ),
            Row(
                "  payhook end to end / empty-task drain",
                "",
                None,
                None,
                1.0,
                over=(f"{p}.e2e.per_s", f"{mode}.drain.per_s"),
                section=section,
            ),
            Row(
                "  reference end to end / empty-task drain",
                "",
                None,
                None,
                over=(f"{r}.e2e.per_s", f"{mode}.drain.per_s"),
                section=section,
            ),
            Row(
                "  empty task, worker CPU",
                "ms/task",
                f"{mode}.drain.cpu_ms.worker",
                section=section,
            ),
            Row(
                "  payhook duplicates / unique backlog",
                "",
                None,
                None,
                1.5,
                over=(f"{p}.duplicates.processed_per_s", f"{p}.unique.processed_per_s"),
                section=section,
            ),
            Row(
                "  reference duplicates / unique backlog",
                "",
                None,
                None,
                over=(f"{r}.duplicates.processed_per_s", f"{r}.unique.processed_per_s"),
                section=section,
            ),
            # The most duplicates / unique could be with one Celery task per delivery: a
            # duplicate that cost nothing but its task would drain like the empty task.
            Row(
                "  empty-task drain / payhook unique backlog (free duplicates' most)",
                "",
                None,
                None,
                over=(f"{mode}.drain.per_s", f"{p}.unique.processed_per_s"),
                section=section,
            ),
            Row(
                "  payhook hot payment / unique backlog",
                "",
                None,
                None,
                0.5,
                over=(f"{p}.hot.processed_per_s", f"{p}.unique.processed_per_s"),
                section=section,
            ),
            Row(
                "  receiver p99 under load",
                "ms",
                f"{p}.unique.receive_p99_ms",
                f"{r}.unique.receive_p99_ms",
                section=section,
            ),
            Row(
                "  half the end-to-end rate, offered",
                "deliveries/s",
                f"{p}.lag.offered_per_s",
                f"{r}.lag.offered_per_s",
                section=section,
            ),
            Row(
                "  receive-to-outcome lag p50 there",
                "ms",
                f"{p}.lag.p50_ms",
                f"{r}.lag.p50_ms",
                section=section,
            ),
            Row(
                "  receive-to-outcome lag p99 there",
                "ms",
                f"{p}.lag.p99_ms",
                f"{r}.lag.p99_ms",
                250.0,
                at_most=True,
                section=section,
                on="payhook",
            ),
            Row(
                "  PostgreSQL connections opened, receiver under load",
                "",
                f"{p}.unique.connections_opened",
                f"{r}.unique.connections_opened",
                0.0,
                at_most=True,
                section=section,
                on="payhook",
            ),
        ]
    section = "peak RSS (largest process of each kind)"
    for key, label, target in (
        ("receiver", "receiver", 150.0),
        ("worker_main", "worker main process", 120.0),
        ("worker_child", "worker child", 120.0),
    ):
        listed.append(
            Row(
                f"  {label}",
                "MiB",
                f"rss.payhook.{key}",
                f"rss.reference.{key}",
                target,
                at_most=True,
                section=section,
                on="payhook",
            )
        )
    return listed


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run[key] for run in runs if key in run) for key in sorted(keys)}


def judged(row: Row, values: dict[str, float]) -> dict[str, Any]:
    """A row with its values, ratio and whether its target is met."""
    mine = values.get(row.mine) if row.mine else None
    theirs = values.get(row.theirs) if row.theirs else None
    ratio = None
    if row.over is not None:
        top, bottom = (values.get(key) for key in row.over)
        ratio = top / bottom if top is not None and bottom else None
    elif mine is not None and theirs:
        ratio = mine / theirs
    measured = ratio if row.on == "ratio" else mine
    met = None
    if row.target is not None and measured is not None:
        met = measured <= row.target if row.at_most else measured >= row.target
    return {
        "label": row.label.strip(),
        "section": row.section,
        "unit": row.unit,
        "payhook_key": row.mine,
        "payhook": mine,
        "reference_key": row.theirs,
        "reference": theirs,
        "ratio": ratio,
        "target": row.target,
        "target_is": "at_most" if row.at_most else "at_least",
        "target_on": row.on,
        "met": met,
    }


def table(judgements: Sequence[dict[str, Any]], invariant: dict[str, Any], title: str) -> Table:
    grid = Table(title=title, title_justify="left")
    for name, justify in (
        ("measure", "left"),
        ("payhook", "right"),
        ("reference", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("target", "right"),
        ("met", "center"),
    ):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]
    section = None
    for j in judgements:
        if j["payhook"] is None and j["reference"] is None and j["ratio"] is None:
            continue
        if j["section"] != section:
            if section is not None:
                grid.add_section()
            grid.add_row(f"[bold]{j['section']}[/bold]")
            section = j["section"]
        target = ""
        if j["target"] is not None:
            sign = "<=" if j["target_is"] == "at_most" else ">="
            target = f"{sign} {j['target']:g}" + ("x" if j["target_on"] == "ratio" else "")
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[j["met"]]
        grid.add_row(
            f"  {j['label']}",
            _number(j["payhook"]),
            _number(j["reference"]),
            j["unit"],
            f"{j['ratio']:.2f}x" if j["ratio"] is not None else "",
            target,
            met,
        )
    verdict = "[green]holds[/green]" if invariant["ok"] else "[red]FAILS[/red]"
    detail = f"{invariant['deliveries']} deliveries, {invariant['outcomes']} outcomes"
    if invariant["problems"]:
        detail += "; " + "; ".join(invariant["problems"])
    grid.caption = (
        "invariant (one outcome per delivery, no payment confirmed twice, every phase its "
        f"outcomes; payhook and reference): {verdict}; {detail}"
    )
    grid.caption_justify = "left"
    return grid


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"
