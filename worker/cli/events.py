"""`payhook events`: host notifications with each endpoint's status, and resending them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import OperationalError

from tasks.storage import outbox
from worker.runtime import start_runtime
from worker.settings import Settings

console = Console()


def events_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    if getattr(args, "action", None) == "resend":
        return _resend(settings, args)
    runtime = start_runtime(settings)
    try:
        with runtime.engine.connect() as conn:
            rows = outbox.listing(conn, status=args.status, before=args.before, limit=args.limit)
    except OperationalError:
        return _unreachable(settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    console.print(_table(rows))
    if not rows:
        console.print("no notifications match")
    elif not settings.notify_endpoints():
        console.print("PAYHOOK_NOTIFY_URL is not set: hosts read these from GET /api/events")
    return 0


def _resend(settings: Settings, args: argparse.Namespace) -> int:
    if (args.notification is None) == (not args.failed):
        print("payhook: give one notification id, or --failed", file=sys.stderr)
        return 2
    endpoints = settings.notify_endpoints()
    if not endpoints:
        print("payhook: PAYHOOK_NOTIFY_URL is not set: nowhere to resend to", file=sys.stderr)
        return 2
    runtime = start_runtime(settings)
    try:
        with runtime.unit_of_work() as uow:
            window = runtime.relay_policy.retry_window
            endpoint_ids = [uow.sends.endpoint(url, runtime.now(), window) for url in endpoints]
            ids = (
                [args.notification]
                if args.notification is not None
                else uow.sends.failed_notifications(args.limit)
            )
            uow.commit()
        resent, unknown = 0, []
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("resending", total=len(ids))
            for notification_id in ids:
                with runtime.unit_of_work() as uow:
                    if args.failed:
                        count = uow.sends.resend_failed(notification_id, runtime.now())
                    elif uow.sends.exists(notification_id):
                        count = uow.sends.resend(notification_id, endpoint_ids, runtime.now())
                    else:
                        count = 0
                        unknown.append(notification_id)
                    uow.commit()
                resent += count
                progress.advance(bar)
    except OperationalError:
        return _unreachable(settings)
    runtime.request_relay()
    console.print(
        f"{resent} sends of {len(ids) - len(unknown)} notifications are due again; the relay "
        "sends them in order per order (payhook events --status pending)"
    )
    if unknown:
        console.print(f"  unknown notifications: {', '.join(map(str, unknown))}")
        return 1
    return 0


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("id", "type", "order", "seq", "payment", "delivery", "created", "sends"):
        table.add_column(column)
    for row in rows:
        sends = "\n".join(
            f"{_safe(send['endpoint'])}: {send['status']} x{send['attempts']}"
            + (f" (last {send['last_status'] or send['last_error']})" if send["attempts"] else "")
            for send in row["sends"]
        )
        table.add_row(
            str(row["id"]),
            row["type"],
            row["order_reference"],
            str(row["order_sequence"]),
            str(row["payment_id"]),
            str(row["delivery_id"] or "-"),
            (row["created_at"] or "")[:19],
            sends or "-",
        )
    return table


def _safe(url: str) -> str:
    """The URL without any user or password in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _unreachable(settings: Settings) -> int:
    print(f"payhook: the database is unreachable: {_safe(settings.database)}", file=sys.stderr)
    return 1
