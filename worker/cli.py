"""`payhook`: the one console script."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from rich.console import Console
from rich.progress import Progress
from sqlalchemy.engine import make_url

from domain.events import MalformedEvent
from domain.providers import parse_delivery
from tasks import migrate as migrations
from tasks import shims
from tasks.replaying import replay_delivery
from tasks.storage import queries
from tasks.storage.engine import make_engine
from worker.bench import add_bench_command
from worker.celery_app import QUEUE, create_app
from worker.cli_tables import deliveries_table, payment_heading, replaced_lines, stats_tables
from worker.demo import run_demo
from worker.flower import run_flower
from worker.http_app import create_http_app
from worker.logs import configure_logging
from worker.metrics_server import MetricsSetupError, serve_worker_metrics
from worker.runtime import ProcessRuntime
from worker.settings import Settings, SettingsError, load_settings
from worker.soak import add_soak_command
from worker.task_metrics import TaskObserver

console = Console()


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
    result: int = args.run(settings, args, extra)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payhook",
        description="Receive payment webhooks and apply each payment change exactly once.",
        epilog="Settings come from PAYHOOK_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="upgrade the database schema (safe to run twice)").set_defaults(
        run=_migrate
    )

    serve = sub.add_parser("serve", help="run the webhook receiver and the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)

    worker = sub.add_parser(
        "worker", help="run a Celery worker (takes Celery's worker options, e.g. --concurrency 2)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve the worker's Prometheus metrics on this port (needs PROMETHEUS_MULTIPROC_DIR)",
    )
    worker.add_argument("--metrics-address", default="0.0.0.0")  # noqa: S104  (scraped remotely)
    worker.set_defaults(run=_worker)
    sub.add_parser("beat", help="run the sweeper's schedule").set_defaults(run=_beat)

    demo = sub.add_parser(
        "demo", help="run everything on the embedded default and send signed sample webhooks"
    )
    demo.add_argument(
        "--once",
        action="store_true",
        help="exit after the samples: status 0 only if every outcome is right",
    )
    demo.set_defaults(run=_demo)

    listing = sub.add_parser("deliveries", help="list deliveries, newest first")
    listing.add_argument("--provider")
    listing.add_argument("--status", choices=["received", "deferred", "processed"])
    listing.add_argument("--outcome", help="outcome kind, e.g. acknowledged_duplicate")
    listing.add_argument("--payment", type=int, help="payment id")
    listing.add_argument(
        "--since", type=datetime.fromisoformat, help="ISO time, e.g. 2026-11-28T10:00+00:00"
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--before", type=int, help="only deliveries older than this id")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_deliveries)

    replay = sub.add_parser(
        "replay", help="run unmatched or dead deliveries again (one, or every one matching)"
    )
    replay.add_argument("delivery", type=int, nargs="?", help="one delivery id")
    replay.add_argument(
        "--outcome", choices=["unmatched", "dead"], help="every delivery with this outcome"
    )
    replay.add_argument("--provider")
    replay.add_argument("--since", type=datetime.fromisoformat)
    replay.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    replay.set_defaults(run=_replay)

    show = sub.add_parser("show", help="one delivery: headers, body, event, outcome")
    show.add_argument("delivery", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)

    payment = sub.add_parser(
        "payment", help="one payment's whole history, one line per delivery, by its reference"
    )
    payment.add_argument("reference", help="the provider's reference (or a learned alias)")
    payment.add_argument("--provider")
    payment.add_argument("--json", action="store_true")
    payment.set_defaults(run=_payment)

    stats = sub.add_parser(
        "stats", help="deliveries by provider, status and outcome; processing lag percentiles"
    )
    stats.add_argument(
        "--since", type=iso_time, help="ISO time (default: 24 hours ago; no offset means UTC)"
    )
    stats.add_argument("--provider")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_stats)

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
    flower.set_defaults(run=_flower)

    add_bench_command(sub)
    add_soak_command(sub)
    return parser


def iso_time(value: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _migrate(settings: Settings, _args: argparse.Namespace, _extra: list[str]) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.database)
    console.print(f"database is at the newest schema: {_safe_url(settings.database)}")
    return 0


def _runtime(settings: Settings) -> ProcessRuntime:
    app = create_app(settings)
    runtime = ProcessRuntime(settings, app)
    shims.install(lambda: runtime)
    return runtime


def _serve(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    app = create_http_app(_runtime(settings))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace, extra: list[str]) -> int:
    if args.metrics_port is not None:
        try:
            serve_worker_metrics(
                port=args.metrics_port,
                address=args.metrics_address,
                broker=settings.broker if settings.uses_redis else None,
                queue=QUEUE,
            )
        except MetricsSetupError as error:
            print(f"payhook: {error}", file=sys.stderr)
            return 2
    runtime = _runtime(settings)
    if args.metrics_port is not None:
        TaskObserver(lambda: runtime.engine, runtime.now).connect()
    runtime.app.worker_main(["worker", "--loglevel=INFO", *extra])
    return 0


def _beat(settings: Settings, _args: argparse.Namespace, extra: list[str]) -> int:
    runtime = _runtime(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "beat-schedule"
    runtime.app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}", *extra])
    return 0


def _demo(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    return run_demo(settings, once=args.once, console=console)


def _deliveries(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    with make_engine(settings.database).connect() as conn:
        rows = queries.list_deliveries(
            conn,
            status=args.status,
            provider=args.provider,
            outcome=args.outcome,
            payment_id=args.payment,
            since=args.since,
            limit=args.limit,
            before=args.before,
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    console.print(deliveries_table(rows))
    if not rows:
        console.print("no deliveries match")
    return 0


def _replay(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    if (args.delivery is None) == (args.outcome is None):
        print("payhook: give one delivery id, or --outcome unmatched|dead", file=sys.stderr)
        return 2
    runtime = _runtime(settings)
    if args.delivery is not None:
        ids = [args.delivery]
    else:
        with runtime.engine.connect() as conn:
            rows = queries.list_deliveries(
                conn,
                outcome=args.outcome,
                provider=args.provider,
                since=args.since,
                limit=args.limit,
            )
        ids = [row["id"] for row in reversed(rows)]  # oldest first, as they arrived
    replayed, refused, unknown = 0, [], []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("replaying", total=len(ids))
        for delivery_id in ids:
            result = replay_delivery(
                delivery_id, runtime.unit_of_work(), runtime.now(), runtime.try_publish
            )
            if result is None:
                unknown.append(delivery_id)
            elif result.replayed:
                replayed += 1
            else:
                refused.append(f"{delivery_id}: {result.why}")
            progress.advance(bar)
    console.print(
        f"replayed {replayed} of {len(ids)} deliveries; their outcomes follow as the "
        "workers process them (payhook deliveries --status received)"
    )
    for line in refused:
        console.print(f"  not replayed {line}")
    if unknown:
        console.print(f"  unknown deliveries: {', '.join(map(str, unknown))}")
    return 0 if not unknown and not refused else 1


def _show(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    with make_engine(settings.database).connect() as conn:
        view = queries.delivery(conn, args.delivery)
        raw = queries.delivery_raw(conn, args.delivery)
        first = None
        if view is not None and view["outcome"] and view["outcome"]["duplicate_of"]:
            first = queries.delivery(conn, view["outcome"]["duplicate_of"])
    if view is None or raw is None:
        print(f"payhook: no delivery {args.delivery}", file=sys.stderr)
        return 1
    headers, body = raw
    try:
        event: Any = parse_delivery(view["provider"], view["event_id"], body)
        parsed = {k: getattr(event, k) for k in event.__slots__}
    except MalformedEvent as error:
        parsed = {"error": str(error)}
    document = {
        **view,
        "headers": _masked(json.loads(headers)),
        "body": body.decode("utf-8", "replace"),
        "event": parsed,
        "first_delivery": first,
    }
    if args.json:
        print(json.dumps(document, indent=2, default=str))
        return 0
    console.print(deliveries_table([view], title=f"delivery {view['id']}"))
    console.print("[bold]event as parsed[/bold]", parsed)
    console.print("[bold]headers[/bold]", document["headers"])
    console.print("[bold]body[/bold]")
    console.print(document["body"], markup=False, highlight=False)
    if first is not None:
        console.print(deliveries_table([first], title="first delivery of this event"))
    return 0


def _payment(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    with make_engine(settings.database).connect() as conn:
        found = queries.payments_by_reference(conn, args.reference, args.provider)
        history = queries.payment_history(conn, found[0]["id"]) if len(found) == 1 else []
    if not found:
        where = f" at {args.provider}" if args.provider else ""
        print(f"payhook: no payment with reference {args.reference!r}{where}", file=sys.stderr)
        return 1
    if len(found) > 1:
        providers = ", ".join(sorted({p["provider"] for p in found}))
        print(
            f"payhook: reference {args.reference!r} names payments at {providers}: give --provider",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps({"payment": found[0], "deliveries": history}, indent=2))
        return 0
    console.print(payment_heading(found[0]))
    console.print(deliveries_table(history, title="deliveries, oldest first"))
    for line in replaced_lines(history):
        console.print(line)
    if not history:
        console.print("no delivery concerns this payment yet")
    return 0


def _stats(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    since = args.since or datetime.now(UTC) - timedelta(hours=24)
    with make_engine(settings.database).connect() as conn:
        stats = queries.delivery_stats(conn, since=since, provider=args.provider)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for table in stats_tables(stats):
        console.print(table)
    return 0


def _flower(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    auth = settings.flower_basic_auth
    address = args.address or ""
    if args.local_only:
        if address not in {"", "127.0.0.1"}:
            print("payhook: --local-only binds 127.0.0.1: leave out --address", file=sys.stderr)
            return 2
        address = "127.0.0.1"
    elif auth is None:
        print(
            "payhook: PAYHOOK_FLOWER_BASIC_AUTH (user:password) is not set: set it, "
            "or run payhook flower --local-only",
            file=sys.stderr,
        )
        return 2
    run_flower(
        create_app(settings),
        address=address,
        port=args.port,
        basic_auth=None if auth is None else auth.get_secret_value(),
    )
    return 0


def _masked(headers: dict[str, str]) -> dict[str, str]:
    """Signatures are not secrets, but there is no reason to echo them in full."""
    return {
        k: (v[:12] + "…" if "signature" in k and len(v) > 12 else v) for k, v in headers.items()
    }


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
