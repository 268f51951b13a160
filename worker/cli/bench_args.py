"""`payhook bench`'s options: only argparse here, so that the CLI can list them cheaply."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
DESCRIPTION = """\
Measure payhook against its ceilings in one run, on loopback: its own PostgreSQL database
(created, then dropped) and Redis database (flushed), `payhook serve`, `payhook worker` and a
bare insert endpoint as subprocesses. Prints one table (and --json-out writes the same figures):

  ceilings     empty-task drain with payhook's worker settings; payhook's confirmation
               transaction straight on PostgreSQL from several threads; a bare ASGI endpoint
               that only INSERTs the delivery, under the same load as the receiver
  receiver     signed Stripe deliveries accepted per second (workers paused), p50/p99
  end to end   unique events for registered payments, first POST to last outcome; then the
               receive-to-outcome lag at a steady load of half that rate
  backlog      processing rate of unique events, of 100 copies of each event, and of distinct
               events that all confirm one payment (lock contention)
  scaling      end to end with 1, 2 and 4 worker processes; peak RSS of every process

The run ends with the invariant check (every delivery exactly one outcome, no payment confirmed
twice, each phase the outcomes it must have) and exits 1 if it fails or a request was refused.
Targets are shown, not enforced."""


def add_bench_command(sub: Any) -> None:
    """Register `payhook bench` on the CLI's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="measure throughput, latency and memory against their ceilings (loopback only)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--database-url",
        metavar="URL",
        default=DEFAULT_DATABASE_URL,
        help="its own database, created and dropped; the name must contain 'bench' "
        "(default: %(default)s)",
    )
    bench.add_argument(
        "--redis-url",
        metavar="URL",
        default=DEFAULT_REDIS_URL,
        help="its own Redis database, flushed (default: %(default)s)",
    )
    bench.add_argument(
        "--scale",
        metavar="F",
        type=_positive_float,
        default=1.0,
        help="multiply every count; CI's smoke run uses 0.01 (default: %(default)s)",
    )
    bench.add_argument(
        "--events",
        metavar="K",
        type=_positive_int,
        default=20_000,
        help="end-to-end events (and payments) before --scale; the drain publishes as many "
        "empty tasks, each scaling run sends K/2 and the steady load K/4 (default: %(default)s)",
    )
    bench.add_argument(
        "--repeat",
        metavar="R",
        type=_positive_int,
        default=1,
        help="measure R times; the table shows medians (default: %(default)s)",
    )
    bench.add_argument(
        "--connections",
        metavar="N",
        type=_positive_int,
        default=32,
        help="concurrent connections of the load generator (default: %(default)s)",
    )
    bench.add_argument(
        "--worker-processes",
        metavar="N",
        type=_positive_int,
        default=2,
        help="prefork processes of the worker outside the scaling runs, as deployed "
        "(default: %(default)s)",
    )
    bench.add_argument(
        "--scaling",
        metavar="N,..",
        type=_counts,
        default="1,2,4",
        help="worker process counts of the scaling runs; '' for none (default: %(default)s)",
    )
    bench.add_argument(
        "--confirm-threads",
        metavar="N",
        type=_positive_int,
        default=8,
        help="client threads of the confirmation-transaction ceiling (default: %(default)s)",
    )
    bench.add_argument(
        "--phase-timeout",
        metavar="S",
        type=_positive_float,
        default=600.0,
        help="give up (exit 1) when a phase takes longer (default: %(default)s)",
    )
    bench.add_argument(
        "--json-out", metavar="PATH", type=Path, help="also write the figures as JSON"
    )
    bench.add_argument(
        "--log-dir",
        metavar="DIR",
        type=Path,
        help="the processes' logs (default: a temporary folder, removed after a passing run)",
    )
    bench.add_argument(
        "--keep-database", action="store_true", help="leave the database behind, for a look"
    )
    bench.set_defaults(run="worker.tooling.bench.run:bench_command")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return number


def _counts(value: str) -> tuple[int, ...]:
    return tuple(_positive_int(part) for part in value.split(",") if part.strip())
