"""`payhook bench`: payhook against its ceilings, measured side by side in one run.

Runs on loopback only, against its own PostgreSQL database (created, then dropped) and its own
Redis database (flushed), with `payhook serve`, `payhook worker` and a bare insert endpoint as
subprocesses. Every loop and every wait is bounded; every run ends with the invariant check.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from tasks.storage.engine import make_engine
from worker.settings import Settings
from worker.tooling.bench import report as bench_report
from worker.tooling.bench.invariants import check_invariants
from worker.tooling.bench.phases import Expected, Phases, Sizes
from worker.tooling.bench.stack import (
    BenchError,
    Service,
    Stack,
    Worker,
    check_loopback,
    create_database,
    database_name,
    drop_database,
    flush_redis,
)
from worker.tooling.processes import peak_rss_mb

JSON_FORMAT = 1
PHASES_PER_ROUND = 8


def bench_command(_settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    """The benchmark builds its own settings: the caller's PAYHOOK_* are not used."""
    console = Console()
    if not console.is_terminal:  # a file or a pipe: keep the table's rows on one line each
        console = Console(width=120)
    try:
        check_loopback(args.database_url, "--database-url")
        check_loopback(args.redis_url, "--redis-url")
        database_name(args.database_url)
    except BenchError as error:
        print(f"payhook bench: {error}", file=sys.stderr)
        return 2
    sizes = Sizes.scaled(args.events, args.scale)
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="payhook-bench-"))
    started = time.time()
    try:
        outcome = _measure(args, sizes, logs)
    except BenchError as error:
        print(f"payhook bench: {error}", file=sys.stderr)
        print(f"payhook bench: logs in {logs}", file=sys.stderr)
        return 1
    runs, invariant, refused = outcome
    listed = bench_report.figures(
        sizes, args.connections, args.worker_processes, args.confirm_threads, args.scaling
    )
    values = bench_report.medians(runs)
    judgements = [bench_report.judged(c, values) for c in bench_report.comparisons(args.scaling)]
    title = f"payhook bench: scale {args.scale:g}, {sizes.events} end-to-end events" + (
        f", medians of {len(runs)} runs" if len(runs) > 1 else ""
    )
    console.print(bench_report.table(listed, values, runs, judgements, invariant, title))
    for what, count in sorted(refused.items()):
        console.print(f"[red]refused[/red] {what}: {count} requests")
    if args.json_out is not None:
        document = {
            "format": JSON_FORMAT,
            "started_at": started,
            "seconds": time.time() - started,
            "config": _config(args, sizes),
            "units": {figure.key: figure.unit for figure in listed},
            "figures": values,
            "runs": runs,
            "comparisons": judgements,
            "invariant": invariant,
            "refused": refused,
        }
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
    passed = bool(invariant["ok"]) and not refused
    if passed and args.log_dir is None:
        shutil.rmtree(logs, ignore_errors=True)
    elif not passed:
        console.print(f"payhook bench: [red]failed[/red]; logs in {logs}")
    return 0 if passed else 1


Outcome = tuple[list[dict[str, float]], dict[str, Any], dict[str, int]]


def _measure(args: argparse.Namespace, sizes: Sizes, logs: Path) -> Outcome:
    create_database(args.database_url)
    engine: Engine | None = None
    stack = Stack(args.database_url, args.redis_url, logs, "whsec_" + secrets.token_hex(16))
    try:
        flush_redis(args.redis_url)
        engine = make_engine(args.database_url, pool_size=args.confirm_threads)
        runs: list[dict[str, float]] = []
        expected: list[Expected] = []
        refused: dict[str, int] = {}
        with _progress() as steps:
            receiver, receiver_url = stack.start_receiver()
            bare, bare_url = stack.start_bare()
            overall = steps.overall(args.repeat * (PHASES_PER_ROUND + len(args.scaling)))
            for round_no in range(args.repeat):
                phases = Phases(
                    stack,
                    engine,
                    steps,
                    sizes,
                    connections=args.connections,
                    confirm_threads=args.confirm_threads,
                    timeout_s=args.phase_timeout,
                    round_tag=f"r{round_no}-",
                )
                try:
                    run = _round(stack, phases, args, receiver_url, bare_url, overall)
                finally:
                    expected += phases.expected
                    for what, count in phases.refused.items():
                        refused[what] = refused.get(what, 0) + count
                    for what, count in phases.resent.items():
                        Console(stderr=True).print(
                            f"{what}: {count} requests sent again after their "
                            "connection dropped, as a provider would"
                        )
                run["rss_receiver_mb"] = _rss([receiver])
                run["rss_bare_mb"] = _rss([bare])
                runs.append(run)
        invariant = check_invariants(engine, expected)
        return runs, invariant, refused
    finally:
        stack.close()
        if engine is not None:
            engine.dispose()
        if not args.keep_database:
            drop_database(args.database_url)


def _round(
    stack: Stack,
    phases: Phases,
    args: argparse.Namespace,
    receiver_url: str,
    bare_url: str,
    done: Callable[[], None],
) -> dict[str, float]:
    run: dict[str, float] = {}
    worker_rss: dict[str, list[float]] = {"main": [], "pool": []}
    with _worker(stack, args.worker_processes, worker_rss) as worker:
        run["drain_per_s"] = phases.drain(worker)
        done()
        run["confirm_per_s"] = phases.confirm_ceiling()
        done()
        bare = phases.bare(bare_url)
        run.update(
            bare_per_s=bare.rate, bare_p50_ms=bare.latency_ms(50), bare_p99_ms=bare.latency_ms(99)
        )
        done()
        received, run["unique_per_s"] = phases.receiver(receiver_url, worker)
        run.update(
            receiver_per_s=received.rate,
            receiver_p50_ms=received.latency_ms(50),
            receiver_p99_ms=received.latency_ms(99),
        )
        done()
        run["duplicates_per_s"] = phases.duplicates(receiver_url, worker)
        done()
        run["hot_per_s"] = phases.hot_payment(receiver_url, worker)
        done()
        run["e2e_per_s"], load = phases.end_to_end(receiver_url, phases.sizes.events)
        run["e2e_receiver_per_s"] = load.rate
        done()
        offered, run["lag_p50_ms"], run["lag_p99_ms"] = phases.lag(
            receiver_url, run["e2e_per_s"] / 2
        )
        run["lag_offered_per_s"] = offered
        done()
    for processes in args.scaling:
        with _worker(stack, processes, worker_rss):
            rate, _ = phases.end_to_end(receiver_url, phases.sizes.scaling, f"e2e {processes}w")
            run[f"e2e_{processes}w_per_s"] = rate
        done()
    if worker_rss["main"] or worker_rss["pool"]:
        run["rss_worker_mb"] = max(worker_rss["main"] + worker_rss["pool"])
    for part, peaks in worker_rss.items():
        if peaks:
            run[f"rss_worker_{part}_mb"] = max(peaks)
    return run


@contextmanager
def _worker(stack: Stack, processes: int, rss: dict[str, list[float]]) -> Iterator[Worker]:
    """A worker for the block; its processes' peak RSS is read just before it stops."""
    worker = stack.start_worker(processes)
    try:
        yield worker
    finally:
        main, *pool = worker.pids()
        rss["main"] += [mb for mb in [peak_rss_mb(main)] if mb is not None]
        rss["pool"] += [mb for mb in map(peak_rss_mb, pool) if mb is not None]
        stack.stop(worker.service)


def _rss(services: Sequence[Service]) -> float:
    return max((peak_rss_mb(s.process.pid) or 0.0) for s in services)


class _Steps:
    """A progress bar per step, under one for the whole run."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def overall(self, total: int) -> Callable[[], None]:
        task = self._progress.add_task("[bold]payhook bench[/bold]", total=total)
        return lambda: self._progress.advance(task)

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        task = self._progress.add_task(description, total=total)
        try:
            yield lambda n: self._progress.advance(task, n)
        finally:
            self._progress.remove_task(task)


@contextmanager
def _progress() -> Iterator[_Steps]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Steps(progress)


def _config(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    return {
        "scale": args.scale,
        "repeat": args.repeat,
        "connections": args.connections,
        "worker_processes": args.worker_processes,
        "scaling": list(args.scaling),
        "confirm_threads": args.confirm_threads,
        "sizes": asdict(sizes),
    }
