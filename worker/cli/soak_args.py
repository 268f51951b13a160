"""`payhook soak`'s options: only argparse here, so that the CLI can list them cheaply."""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_soak"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"

DESCRIPTION = """\
`payhook soak`: thousands of signed Stripe deliveries through a stack of its own, with
faults injected on a schedule, then every invariant checked from the database.

It starts the receiver, a worker and the sweeper on real PostgreSQL and Redis (loopback only),
registers a few hundred payments, sends the planned deliveries (copies and all, out of order)
while it kills worker processes, stops the worker for longer than the sweep budget (a backlog)
and restarts servers, waits for every outcome, and prints one summary. Exit status 1 when an
invariant fails (a delivery recorded dead among them).
"""


def add_soak_command(sub: Any) -> None:
    """Register `payhook soak` on the CLI's subparsers."""
    parser = sub.add_parser(
        "soak",
        help="drive thousands of signed deliveries through a stack of its own while injecting "
        "faults, then check every invariant (loopback only)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run="worker.tooling.soak.run:soak_command")
    number = {"type": _positive, "metavar": "N"}
    parser.add_argument("--deliveries", default=10_000, help="(%(default)s)", **number)
    parser.add_argument("--concurrency", default=16, help="HTTP senders (%(default)s)", **number)
    parser.add_argument("--workers", default=2, help="worker processes (%(default)s)", **number)
    parser.add_argument(
        "--faults",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kill worker processes and restart servers while it runs (default: on)",
    )
    parser.add_argument(
        "--private-servers",
        action="store_true",
        help="start a PostgreSQL cluster and a Redis of its own, so that faults may restart them",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=os.environ.get("PAYHOOK_SOAK_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL database to drop and recreate (env PAYHOOK_SOAK_DATABASE_URL)",
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=os.environ.get("PAYHOOK_SOAK_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis database to flush and use as the broker (env PAYHOOK_SOAK_REDIS_URL)",
    )
    parser.add_argument(
        "--grace",
        default=60,
        help="seconds a delivery waits for its payment before `unmatched` (%(default)s)",
        **number,
    )
    parser.add_argument(
        "--timeout", default=1800, help="seconds to wait for outcomes (%(default)s)", **number
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="repeat a run: the summary prints its seed"
    )


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return number
