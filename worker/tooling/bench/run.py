"""`payhook bench`: payhook beside a plain design of the same flow, measured in one run.

Runs on loopback only, against its own PostgreSQL database (created, then dropped) and its own
Redis database (flushed), with payhook's receiver and worker and the reference's as
subprocesses. Phases alternate between the two sides, so that both see the same machine. Every
loop and every wait is bounded; every run ends with the invariant check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import Engine, create_engine

from worker.settings import Settings
from worker.tooling.bench import report
from worker.tooling.bench.cpu import descendants
from worker.tooling.bench.invariants import check_invariants
from worker.tooling.bench.phases import Expected, Phases, Sizes
from worker.tooling.bench.sides import Side
from worker.tooling.bench.stack import (
    BENCH_APP_NAME,
    BenchError,
    Stack,
    Worker,
    check_loopback,
    create_database,
    database_name,
    drop_database,
    flush_redis,
)
from worker.tooling.bench.wrk import WrkMissing, ensure_wrk
from worker.tooling.processes import children, peak_rss_mb

JSON_FORMAT = 2
PHASES = ("unique", "duplicates", "hot")
REFERENCE_POOL_SIZE = 5  # payhook's default PAYHOOK_DB_POOL_SIZE


def bench_command(_settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    """The benchmark builds its own settings: the caller's PAYHOOK_* are not used."""
    console = Console()
    if not console.is_terminal:  # a file or a pipe: keep the table's rows on one line each
        console = Console(width=130)
    try:
        check_loopback(args.database_url, "--database-url")
        check_loopback(args.redis_url, "--redis-url")
        database_name(args.database_url)
        ensure_wrk()
    except (BenchError, WrkMissing) as error:
        print(f"payhook bench: {error}", file=sys.stderr)
        return 2
    # A SIGTERM stops the run like an error does: its processes are stopped, its database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sizes = Sizes.scaled(args.events, args.scale)
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="payhook-bench-"))
    started = time.time()
    try:
        runs, invariant, refused = _measure(args, sizes, logs)
    except BenchError as error:
        print(f"payhook bench: {error}", file=sys.stderr)
        print(f"payhook bench: logs in {logs}", file=sys.stderr)
        return 1
    values = report.medians(runs)
    judgements = [report.judged(row, values) for row in report.rows(args.task_events, sizes)]
    title = (
        f"payhook bench: scale {args.scale:g}, {args.connections} connections, "
        f"{args.receiver_processes} receiver and {args.worker_processes} worker processes "
        f"each side, {os.cpu_count()} CPUs"
        + (f", medians of {len(runs)} runs" if len(runs) > 1 else "")
    )
    console.print(report.table(judgements, invariant, title))
    for what, count in sorted(refused.items()):
        console.print(f"[red]refused[/red] {what}: {count} requests")
    if args.json_out is not None:
        document = {
            "format": JSON_FORMAT,
            "started_at": started,
            "seconds": time.time() - started,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "config": _config(args, sizes),
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
    say = Console(stderr=True).log
    try:
        flush_redis(args.redis_url)
        # The benchmark's own connections: a fixed pool, named, so that they are never counted
        # and never opened during a measured window.
        engine = create_engine(
            args.database_url,
            pool_size=4,
            max_overflow=0,
            connect_args={"application_name": BENCH_APP_NAME},
        )
        receivers = args.receiver_processes
        receiver, receiver_url = stack.start_receiver(receivers)
        ref_receiver, ref_url = stack.start_reference_receiver(receivers, REFERENCE_POOL_SIZE)
        worker = stack.start_worker(args.worker_processes)
        ref_worker = stack.start_reference_worker(args.worker_processes)
        sides = [
            Side("payhook", receiver, receiver_url, worker, engine),
            Side("reference", ref_receiver, ref_url, ref_worker, engine),
        ]
        runs: list[dict[str, float]] = []
        expected: list[Expected] = []
        refused: dict[str, int] = {}
        rss: dict[str, float] = {}
        for round_no in range(args.repeat):
            run: dict[str, float] = {}
            for mode in args.task_events:
                say(f"round {round_no + 1}: task events {mode}")
                phases = Phases(
                    stack,
                    engine,
                    sizes,
                    connections=args.connections,
                    timeout_s=args.phase_timeout,
                    round_tag=f"r{round_no}{mode}-",
                    say=say,
                )
                try:
                    run |= _round(stack, phases, sides, mode)
                finally:
                    expected += phases.expected
                    for what, count in phases.refused.items():
                        refused[what] = refused.get(what, 0) + count
            _peak_rss(sides, rss)
            runs.append(run | rss)
        invariant = check_invariants(engine, expected)
        return runs, invariant, refused
    finally:
        stack.close()
        if engine is not None:
            engine.dispose()
        if not args.keep_database:
            drop_database(args.database_url)


def _round(stack: Stack, phases: Phases, sides: list[Side], mode: str) -> dict[str, float]:
    run: dict[str, float] = {}
    for side in sides:
        stack.task_events(side.worker, mode == "on")
    run |= _prefixed(f"{mode}.drain.", phases.drain(sides[1].worker))
    # Alternate the sides phase by phase: both meet the same (shared, noisy) machine.
    for phase in PHASES:
        for side in sides:
            run |= _prefixed(f"{mode}.{side.name}.{phase}.", phases.backlog(side, phase))
    for side in sides:
        figures = phases.end_to_end(side)
        run |= _prefixed(f"{mode}.{side.name}.e2e.", figures)
        lag = phases.lag(side, figures["per_s"] / 2)
        run |= _prefixed(f"{mode}.{side.name}.lag.", lag)
    return run


def _prefixed(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    return {prefix + key: value for key, value in figures.items()}


def _peak_rss(sides: list[Side], rss: dict[str, float]) -> None:
    """The largest peak RSS of each kind of process, kept across rounds."""
    for side in sides:
        worker: Worker = side.worker
        main = worker.service.process.pid
        kinds = {
            "receiver": descendants(side.receiver.process.pid),
            "worker_main": [main],
            "worker_child": children(main),
        }
        for kind, pids in kinds.items():
            peaks = [mb for mb in map(peak_rss_mb, pids) if mb is not None]
            key = f"rss.{side.name}.{kind}"
            if peaks:
                rss[key] = max([*peaks, rss.get(key, 0.0)])


def _config(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    return {
        "scale": args.scale,
        "events": args.events,
        "repeat": args.repeat,
        "connections": args.connections,
        "worker_processes": args.worker_processes,
        "receiver_processes": args.receiver_processes,
        "task_events": list(args.task_events),
        "sizes": asdict(sizes),
    }
