"""The operator's commands: migrate, deliveries, replay, show, payment and stats."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import Progress
from sqlalchemy.engine import make_url

from domain.events import MalformedEvent
from domain.providers import parse_delivery
from tasks import migrate as migrations
from tasks.replaying import replay_delivery
from tasks.storage import queries
from tasks.storage.engine import make_engine
from worker.cli.tables import deliveries_table, payment_heading, replaced_lines, stats_tables
from worker.runtime import start_runtime
from worker.settings import Settings

console = Console()


def migrate_command(settings: Settings, _args: argparse.Namespace, _extra: list[str]) -> int:
    if not settings.database_url:  # the embedded default's SQLite file lives in the data dir
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.database)
    console.print(f"database is at the newest schema: {_safe_url(settings.database)}")
    return 0


def deliveries_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
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


def replay_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    if (args.delivery is None) == (args.outcome is None):
        print("payhook: give one delivery id, or --outcome unmatched|dead", file=sys.stderr)
        return 2
    runtime = start_runtime(settings)
    if args.delivery is not None:
        ids = [args.delivery]
    else:
        with runtime.engine.connect() as conn:
            ids = _every_delivery(conn, args.outcome, args.provider, args.since)
        if args.limit is not None:
            ids = ids[: max(0, args.limit)]
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


def _every_delivery(
    conn: Any, outcome: str, provider: str | None, since: datetime | None
) -> list[int]:
    """Ids of every delivery with `outcome`, oldest first (as they arrived), page by page."""
    newest_first: list[int] = []
    before: int | None = None
    while True:
        rows = queries.list_deliveries(
            conn,
            outcome=outcome,
            provider=provider,
            since=since,
            limit=queries.MAX_PAGE,
            before=before,
        )
        newest_first += [row["id"] for row in rows]
        if len(rows) < queries.MAX_PAGE:
            return newest_first[::-1]
        before = rows[-1]["id"]


def show_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
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


def payment_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
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


def stats_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    since = args.since or datetime.now(UTC) - timedelta(hours=24)
    with make_engine(settings.database).connect() as conn:
        stats = queries.delivery_stats(conn, since=since, provider=args.provider)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for table in stats_tables(stats):
        console.print(table)
    return 0


def _masked(headers: dict[str, str]) -> dict[str, str]:
    """Signatures are not secrets, but there is no reason to echo them in full."""
    return {
        k: (v[:12] + "…" if "signature" in k and len(v) > 12 else v) for k, v in headers.items()
    }


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
