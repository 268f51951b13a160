"""What `payhook bench` shows: one table, and the same figures as a JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from worker.tooling.bench.phases import Sizes


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    section: str


@dataclass(frozen=True)
class Comparison:
    """`value` over `ceiling` (a ratio), or `value` alone against an absolute `target`."""

    name: str
    value: str
    ceiling: str | None
    target: float | None
    at_most: bool = False  # the target is an upper bound (lag, memory)


def figures(
    sizes: Sizes, connections: int, workers: int, confirm_threads: int, scaling: Sequence[int]
) -> list[Figure]:
    """Every figure of a run, in the order of the table."""
    backlog = "processing a backlog"
    listed = [
        Figure("drain_per_s", f"empty-task drain, {workers} procs", "tasks/s", "ceilings"),
        Figure("confirm_per_s", f"confirm tx, {confirm_threads} threads", "tx/s", "ceilings"),
        Figure("bare_per_s", f"bare insert, {connections} conns", "req/s", "ceilings"),
        Figure("bare_p50_ms", "bare insert p50", "ms", "ceilings"),
        Figure("bare_p99_ms", "bare insert p99", "ms", "ceilings"),
        Figure("receiver_per_s", f"receiver, {connections} conns", "req/s", "receiver"),
        Figure("receiver_p50_ms", "receiver p50", "ms", "receiver"),
        Figure("receiver_p99_ms", "receiver p99", "ms", "receiver"),
        Figure("e2e_per_s", f"end to end, {sizes.events} events", "events/s", "end to end"),
        Figure("e2e_receiver_per_s", "  receiver meanwhile", "req/s", "end to end"),
        Figure("lag_offered_per_s", "half load offered", "events/s", "end to end"),
        Figure("lag_p50_ms", "lag p50 at half load", "ms", "end to end"),
        Figure("lag_p99_ms", "lag p99 at half load", "ms", "end to end"),
        Figure("unique_per_s", f"unique, {sizes.receiver} events", "deliveries/s", backlog),
        Figure(
            "duplicates_per_s",
            f"duplicates, {sizes.duplicates} of {sizes.duplicate_events} events",
            "deliveries/s",
            backlog,
        ),
        Figure("hot_per_s", f"hot payment, {sizes.hot} events", "deliveries/s", backlog),
    ]
    listed += [
        Figure(f"e2e_{n}w_per_s", f"end to end, {n} procs", "events/s", "scaling") for n in scaling
    ]
    listed += [
        Figure("rss_receiver_mb", "receiver", "MiB", "peak RSS"),
        Figure("rss_bare_mb", "bare insert", "MiB", "peak RSS"),
        Figure("rss_worker_mb", "worker, largest process", "MiB", "peak RSS"),
        Figure("rss_worker_main_mb", "  worker main process", "MiB", "peak RSS"),
        Figure("rss_worker_pool_mb", "  worker pool process", "MiB", "peak RSS"),
    ]
    return listed


def comparisons(scaling: Sequence[int]) -> list[Comparison]:
    listed = [
        Comparison("end to end vs empty-task drain", "e2e_per_s", "drain_per_s", 1.0),
        Comparison("end to end vs confirmation transaction", "e2e_per_s", "confirm_per_s", None),
        Comparison("receiver vs bare insert endpoint", "receiver_per_s", "bare_per_s", 0.7),
        Comparison("receiver p99 vs bare p99", "receiver_p99_ms", "bare_p99_ms", None),
        Comparison("lag p99 at half load", "lag_p99_ms", None, 250.0, at_most=True),
        Comparison("duplicates vs unique", "duplicates_per_s", "unique_per_s", 1.5),
        Comparison("hot payment vs distinct payments", "hot_per_s", "unique_per_s", 0.5),
        Comparison("worker peak RSS", "rss_worker_mb", None, 120.0, at_most=True),
    ]
    if scaling:
        first = scaling[0]
        listed += [
            Comparison(
                f"{n} vs {first} worker processes", f"e2e_{n}w_per_s", f"e2e_{first}w_per_s", None
            )
            for n in scaling[1:]
        ]
    return listed


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run[key] for run in runs if key in run) for key in sorted(keys)}


def judged(comparison: Comparison, values: dict[str, float]) -> dict[str, Any]:
    """A comparison with its ratio (if it has a ceiling) and whether its target is met."""
    value = values.get(comparison.value)
    ceiling = values.get(comparison.ceiling) if comparison.ceiling else None
    ratio = value / ceiling if value is not None and ceiling else None
    measured = ratio if comparison.ceiling else value
    met = None
    if comparison.target is not None and measured is not None:
        met = measured <= comparison.target if comparison.at_most else measured >= comparison.target
    return {
        "name": comparison.name,
        "value_key": comparison.value,
        "value": value,
        "ceiling_key": comparison.ceiling,
        "ceiling": ceiling,
        "ratio": ratio,
        "target": comparison.target,
        "target_is": "at_most" if comparison.at_most else "at_least",
        "met": met,
    }


def table(
    listed: Sequence[Figure],
    values: dict[str, float],
    runs: Sequence[dict[str, float]],
    judgements: Sequence[dict[str, Any]],
    invariant: dict[str, Any],
    title: str,
) -> Table:
    by_value: dict[str, list[dict[str, Any]]] = {}
    for judgement in judgements:
        by_value.setdefault(judgement["value_key"], []).append(judgement)
    names = {figure.key: figure.label for figure in listed}
    spread = len(runs) > 1
    grid = Table(title=title, title_justify="left")
    grid.add_column("measure")
    grid.add_column("value", justify="right")
    grid.add_column("unit")
    if spread:
        grid.add_column(f"range of {len(runs)}", justify="right")
    grid.add_column("compared with")
    grid.add_column("ratio", justify="right")
    grid.add_column("target", justify="right")
    grid.add_column("met", justify="center")
    section = None
    for figure in listed:
        if figure.key not in values:
            continue
        if figure.section != section:
            if section is not None:
                grid.add_section()
            grid.add_row(f"[bold]{figure.section}[/bold]")
            section = figure.section
        rows: list[dict[str, Any] | None] = [*by_value.get(figure.key, [])] or [None]
        for i, compared in enumerate(rows):
            cells = (
                [f"  {figure.label}", _number(values[figure.key]), figure.unit]
                if i == 0
                else ["", "", ""]
            )
            if spread:
                cells.append(_range(runs, figure.key) if i == 0 else "")
            cells += _judgement_cells(compared, names)
            grid.add_row(*cells)
    verdict = "[green]holds[/green]" if invariant["ok"] else "[red]FAILS[/red]"
    detail = f"{invariant['deliveries']} deliveries, {invariant['outcomes']} outcomes"
    if invariant["problems"]:
        detail += "; " + "; ".join(invariant["problems"])
    grid.caption = (
        f"invariant (one outcome per delivery, no payment confirmed twice): {verdict}; {detail}"
    )
    grid.caption_justify = "left"
    return grid


def _judgement_cells(judgement: dict[str, Any] | None, names: dict[str, str]) -> list[str]:
    if judgement is None:
        return ["", "", "", ""]
    against = (
        names.get(judgement["ceiling_key"] or "", "").strip() if judgement["ceiling_key"] else ""
    )
    ratio = f"{judgement['ratio']:.2f}x" if judgement["ratio"] is not None else ""
    target = ""
    if judgement["target"] is not None:
        sign = "<=" if judgement["target_is"] == "at_most" else ">="
        suffix = "x" if judgement["ceiling_key"] else ""
        target = f"{sign} {judgement['target']:g}{suffix}"
    met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[judgement["met"]]
    return [against, ratio, target, met]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def _range(runs: Sequence[dict[str, float]], key: str) -> str:
    seen = [run[key] for run in runs if key in run]
    return f"{_number(min(seen))}-{_number(max(seen))}" if seen else ""
