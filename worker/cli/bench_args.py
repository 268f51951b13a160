"""`payhook bench`'s options: only argparse here, so that the CLI can list them cheaply."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
DESCRIPTION = """\
Measure payhook side by side with a plain design of the same flow, in one run, on loopback: its
own PostgreSQL database (created, then dropped) and Redis database (flushed); `payhook serve` and
`payhook worker --metrics-port` (as deployed), and the reference's receiver and worker, as
subprocesses. Nothing of the
reference is payhook's: a raw ASGI receiver under uvicorn's defaults (verify, one INSERT through a
psycopg pool, one Celery publish) and a plain Celery task confirming in one psycopg transaction,
with its own tables, Celery app and settings. The load generator is wrk (installed with apt-get
when missing and run as root), cycling through pre-signed unique bodies.

The headline is CPU per delivery, read from /proc over each measured window and split by
process: receiver, worker main, worker children, the PostgreSQL backends serving each (by
application name), the Redis server (INFO cpu; shared with its other clients) and wrk. Printed
for unique deliveries, duplicates, a hot payment and end to end, with task events on (as Flower
needs them) and off; then rates, the empty-task drain of the reference's Celery app, the lag at
half the end-to-end rate, the connections the receiver opened, and peak RSS.

The run ends with the invariant check (every delivery exactly one outcome, no payment confirmed
twice, each phase the outcomes it must have; payhook and reference) and exits 1 if it fails or a
request was refused. Targets are shown, not enforced."""


def add_bench_command(sub: Any) -> None:
    """Register `payhook bench` on the CLI's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="CPU per delivery, rates, lag and memory of payhook beside a plain design "
        "(loopback only)",
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
        default=2_000,
        help="deliveries per phase before --scale: K unique, K duplicates of K/100 events, K/5 "
        "for one payment, K end to end, K/4 at half that rate, K empty tasks "
        "(default: %(default)s)",
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
        default=16,
        help="concurrent connections of the load generator (default: %(default)s)",
    )
    bench.add_argument(
        "--worker-processes",
        metavar="N",
        type=_positive_int,
        default=2,
        help="prefork processes of each worker, payhook's and the reference's "
        "(default: %(default)s)",
    )
    bench.add_argument(
        "--receiver-processes",
        metavar="N",
        type=_positive_int,
        default=1,
        help="server processes of each receiver, payhook's (serve --workers) and the "
        "reference's (uvicorn --workers) (default: %(default)s)",
    )
    bench.add_argument(
        "--task-events",
        metavar="on,off",
        type=_modes,
        default="on,off",
        help="measure with the workers' task events on, off, or both (default: %(default)s)",
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


def _modes(value: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in value.split(",") if part.strip())
    if not modes or set(modes) - {"on", "off"}:
        raise argparse.ArgumentTypeError(f"on, off or on,off, not {value!r}")
    return modes
