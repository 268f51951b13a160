"""`payhook`: the one console script.

This module only parses. Each command names its entry point as a "module:function" string
(`set_defaults(run=...)`), and `main` imports that one module once the command is known: a
worker must not load a web framework, the providers' SDKs or Flower before it forks, since every
prefork child would carry them; nor does an operator's command need any of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from worker.cli import unreachable
from worker.cli.bench_args import add_bench_command
from worker.cli.soak_args import add_soak_command
from worker.logs import configure_logging
from worker.settings import Settings, SettingsError, load_settings

Command = Callable[[Settings, argparse.Namespace, list[str]], int]
"""A command's entry point: settings, its parsed options, and the options left for Celery."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in {"worker", "beat"}:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"payhook: {error}", file=sys.stderr)
        return 2
    configure_logging(json=settings.log_format == "json")
    try:
        return entry_point(args.run)(settings, args, extra)
    except unreachable.FAILURES as error:
        # An operator's command against a database or broker it cannot reach: one line, the
        # password hidden, never a traceback.
        print(unreachable.explain(error, settings), file=sys.stderr)
        return 1


def entry_point(target: str) -> Command:
    """The function a "module:function" string names, its module imported now and not before."""
    module, _, function = target.partition(":")
    run: Command = getattr(importlib.import_module(module), function)
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payhook",
        description="Receive payment webhooks and apply each payment change exactly once.",
        epilog="Settings come from PAYHOOK_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="upgrade the database schema (safe to run twice)").set_defaults(
        run="worker.cli.operator:migrate_command"
    )

    serve = sub.add_parser("serve", help="run the webhook receiver and the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=_positive,
        default=os.cpu_count() or 1,
        help="server processes, each with its own connection pool (default: the CPU count, "
        "%(default)s here)",
    )
    serve.set_defaults(run="worker.cli.serve:serve_command")

    worker = sub.add_parser(
        "worker", help="run a Celery worker (takes Celery's worker options, e.g. --concurrency 2)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve the worker's Prometheus metrics on this port (needs PROMETHEUS_MULTIPROC_DIR)",
    )
    worker.add_argument("--metrics-address", default="0.0.0.0")  # noqa: S104  (scraped remotely)
    worker.set_defaults(run="worker.cli.workers:worker_command")
    sub.add_parser("beat", help="run the sweeper's schedule").set_defaults(
        run="worker.cli.workers:beat_command"
    )

    demo = sub.add_parser(
        "demo", help="run everything on the embedded default and send signed sample webhooks"
    )
    demo.add_argument(
        "--once",
        action="store_true",
        help="exit after the samples: status 0 only if every outcome is right",
    )
    demo.set_defaults(run="worker.tooling.demo:demo_command")

    listing = sub.add_parser("deliveries", help="list deliveries, newest first")
    listing.add_argument("--provider")
    listing.add_argument("--status", choices=["received", "deferred", "processed"])
    listing.add_argument("--outcome", help="outcome kind, e.g. acknowledged_duplicate")
    listing.add_argument("--payment", type=int, help="payment id")
    listing.add_argument(
        "--since", type=iso_time, help="ISO time, e.g. 2026-11-28T10:00 (no offset means UTC)"
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--before", type=int, help="only deliveries older than this id")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run="worker.cli.operator:deliveries_command")

    replay = sub.add_parser(
        "replay", help="run unmatched or dead deliveries again (one, or every one matching)"
    )
    replay.add_argument("delivery", type=int, nargs="?", help="one delivery id")
    replay.add_argument(
        "--outcome", choices=["unmatched", "dead"], help="every delivery with this outcome"
    )
    replay.add_argument("--provider")
    replay.add_argument("--since", type=iso_time, help="ISO time (no offset means UTC)")
    replay.add_argument(
        "--limit", type=int, help="at most this many, the oldest first (default: every one)"
    )
    replay.set_defaults(run="worker.cli.operator:replay_command")

    show = sub.add_parser("show", help="one delivery: headers, body, event, outcome")
    show.add_argument("delivery", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run="worker.cli.operator:show_command")

    payment = sub.add_parser(
        "payment", help="one payment's whole history, one line per delivery, by its reference"
    )
    payment.add_argument("reference", help="the provider's reference (or a learned alias)")
    payment.add_argument("--provider")
    payment.add_argument("--json", action="store_true")
    payment.set_defaults(run="worker.cli.operator:payment_command")

    stats = sub.add_parser(
        "stats", help="deliveries by provider, status and outcome; processing lag percentiles"
    )
    stats.add_argument(
        "--since", type=iso_time, help="ISO time (default: 24 hours ago; no offset means UTC)"
    )
    stats.add_argument("--provider")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run="worker.cli.operator:stats_command")

    events = sub.add_parser(
        "events", help="host notifications, newest first, with each endpoint's status"
    )
    events.add_argument("--status", choices=["pending", "delivered", "failed"])
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--before", type=int, help="only notifications older than this id")
    events.add_argument("--json", action="store_true")
    events.set_defaults(run="worker.cli.events:events_command")
    events_actions = events.add_subparsers(dest="action", metavar="ACTION")
    resend = events_actions.add_parser(
        "resend", help="send one notification again, or every failed one (--failed)"
    )
    resend.add_argument("notification", type=int, nargs="?", help="one notification id")
    resend.add_argument("--failed", action="store_true", help="every failed notification")
    resend.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")

    flower = sub.add_parser(
        "flower", help="run Flower for this app: basic auth (PAYHOOK_FLOWER_BASIC_AUTH), read-only"
    )
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", help="interface to bind (default: all)")
    flower.add_argument(
        "--local-only",
        action="store_true",
        help="bind 127.0.0.1 only; then PAYHOOK_FLOWER_BASIC_AUTH may be left unset",
    )
    flower.set_defaults(run="worker.taskqueue.flower:flower_command")

    add_bench_command(sub)
    add_soak_command(sub)
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return number


def iso_time(value: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


if __name__ == "__main__":
    sys.exit(main())
