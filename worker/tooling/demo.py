"""`payhook demo`: receiver, worker and sweeper on the embedded default, fed signed samples."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from tasks import migrate as migrations
from tasks.storage import queries
from tasks.storage.engine import make_engine
from worker.cli.tables import deliveries_table
from worker.settings import Settings
from worker.signing.standard import sign_standard
from worker.signing.stripe import sign_stripe
from worker.tooling.host_endpoint import HostEndpoint
from worker.tooling.stack import Stack, StackError, payhook

SAMPLES = Path(__file__).parent / "demo_samples"
OUTCOME_TIMEOUT_S = 90
NOTIFICATIONS_TIMEOUT_S = 30


@dataclass(frozen=True)
class Sample:
    what: str
    path: str
    body: bytes
    headers: dict[str, str]
    expected: str  # kind/reason or kind


def demo_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    return run_demo(settings, once=args.once, console=Console())


def run_demo(settings: Settings, *, once: bool, console: Console) -> int:
    folder = (settings.data_dir / "demo").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stripe_secret = "whsec_" + secrets.token_hex(16)
    shop_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    token = secrets.token_urlsafe(32)
    host = HostEndpoint("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()).start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")},
        "PAYHOOK_DATA_DIR": str(folder),
        "PAYHOOK_API_TOKEN": token,
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": stripe_secret,
        "PAYHOOK_STANDARD_WEBHOOK_SECRETS": f"shop={shop_secret}",
        "PAYHOOK_UNMATCHED_GRACE_S": "60",
        "PAYHOOK_NOTIFY_URL": host.url,
        "PAYHOOK_NOTIFY_SECRET": host.secret,
        "PAYHOOK_NOTIFY_INTERVAL_S": "1",
    }
    demo_settings = Settings(data_dir=folder)
    console.print(f"[bold]payhook demo[/bold] on the embedded default in {folder}")
    migrations.upgrade(demo_settings.database)
    stack = Stack(env, folder)
    stack.start_receiver()
    # One worker that also runs the sweeper's schedule (beat), as the embedded default allows.
    stack.start("worker", payhook("worker", "--concurrency", "1", "--beat",
                                  f"--schedule={folder / 'beat-schedule'}"))  # fmt: skip
    base = stack.base_url
    try:
        with httpx.Client(
            base_url=base, timeout=10, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            _wait_ready(stack, console)
            ok = _play(client, stripe_secret, shop_secret, demo_settings, console)
            ok &= _show_notifications(client, host, console)
        if once:
            return 0 if ok else 1
        console.print(
            f"\nreceiver and API on {base} (token {token}); logs in {folder}. "
            "Ctrl-C stops the demo."
        )
        while all(p.poll() is None for p in stack.named.values()):
            time.sleep(1)
        console.print("[red]a demo process stopped; see its log[/red]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        host.stop()


def _show_notifications(client: httpx.Client, host: HostEndpoint, console: Console) -> bool:
    """Wait until the local endpoint has every notification the feed lists; show them."""
    deadline = time.monotonic() + NOTIFICATIONS_TIMEOUT_S
    listed: list[dict[str, Any]] = []
    with console.status("waiting for the host notifications …"):
        while time.monotonic() < deadline:
            answer = client.get("/api/events", params={"limit": 1000})
            answer.raise_for_status()
            listed = answer.json()
            if {str(event["id"]) for event in listed} <= {r.message_id for r in host.distinct()}:
                break
            time.sleep(0.25)
    table = Table(title="notifications the local host endpoint received, signature verified")
    for column in ("webhook-id", "type", "order", "seq", "payment", "state", "amount", "delivery"):
        table.add_column(column)
    for item in host.distinct():
        data = item.body["data"]
        table.add_row(
            item.message_id,
            item.body["type"],
            data["order_reference"],
            str(data["order_sequence"]),
            str(data["payment_id"]),
            data["state"],
            f"{data['amount']} {data['currency']}",
            str(data["delivery_id"] or "manual"),
        )
    console.print(table)
    received = {r.message_id for r in host.distinct()}
    missing = [event["id"] for event in listed if str(event["id"]) not in received]
    ok = bool(listed) and not missing and host.unverified == 0
    console.print(
        f"{len(received)} notifications pushed to {host.url}, each once per change "
        f"(GET /api/events lists {len(listed)})"
        + ("" if ok else f"; [red]missing {missing}, unverified {host.unverified}[/red]")
    )
    return ok


def _play(
    client: httpx.Client, stripe_secret: str, shop_secret: str, settings: Settings, console: Console
) -> bool:
    for reference, total, currency in (
        ("order-A", 2000, "USD"),
        ("order-B", 2000, "USD"),
        ("order-C", 1500, "EUR"),
        ("order-D", 500, "USD"),
        ("order-E", 2000, "USD"),
        ("order-F", 2000, "USD"),
    ):
        _api(
            client,
            "POST",
            "/api/orders",
            {"reference": reference, "total": total, "currency": currency},
        )
    pay = {"provider": "stripe", "amount": 2000, "currency": "USD"}
    _api(
        client,
        "POST",
        "/api/payments",
        {**pay, "order_reference": "order-A", "provider_reference": "pi_demo_A"},
    )
    _api(
        client,
        "POST",
        "/api/payments",
        {**pay, "order_reference": "order-B", "provider_reference": "pi_demo_B"},
    )
    _api(
        client,
        "POST",
        "/api/payments",
        {**pay, "order_reference": "order-F", "provider_reference": "pi_demo_F"},
    )
    _api(
        client,
        "POST",
        "/api/payments",
        {
            "order_reference": "order-C",
            "provider": "shop",
            "provider_reference": "shop-pay-C",
            "amount": 1500,
            "currency": "EUR",
        },
    )
    manual = _api(
        client,
        "POST",
        "/api/payments",
        {
            "order_reference": "order-D",
            "provider": "stripe",
            "amount": 500,
            "currency": "USD",
            "provider_reference": "pi_demo_D",
        },
    )

    samples = _samples(stripe_secret, shop_secret)
    sent: list[tuple[Sample, int]] = []
    for sample in samples:
        answer = client.post(sample.path, content=sample.body, headers=sample.headers)
        if answer.status_code != 202:
            console.print(f"[red]{sample.what}: answered {answer.status_code} {answer.text}")
            return False
        sent.append((sample, answer.json()["delivery_id"]))
        if sample.what.startswith("confirmation before its payment"):
            time.sleep(1)  # the host registers payment E only after the webhook arrived
            _api(
                client,
                "POST",
                "/api/payments",
                {**pay, "order_reference": "order-E", "provider_reference": "pi_demo_E"},
            )
    console.print(f"sent {len(sent)} signed webhooks; waiting for their outcomes …")

    confirmations = [
        client.post(f"/api/payments/{manual['id']}/confirm", headers={"Idempotency-Key": k})
        for k in ("demo-1", "demo-1", "demo-2")
    ]
    views = _wait_for_outcomes(settings, [d for _, d in sent], console)
    rows, all_ok = [], True
    for sample, delivery_id in sent:
        view = views[delivery_id]
        outcome = view["outcome"] or {}
        got = "/".join(p for p in (outcome.get("kind"), outcome.get("reason")) if p) or "none"
        all_ok &= got == sample.expected
        rows.append(view)
        mark = "[green]ok[/green]" if got == sample.expected else f"[red]expected {sample.expected}"
        console.print(f"  {delivery_id:>3} {sample.what}: {got} {mark}")
    console.print(deliveries_table(rows, title="deliveries and their outcomes"))
    codes = [c.status_code for c in confirmations]
    console.print(
        f"manual confirmation of payment {manual['id']}: first {codes[0]}, replayed "
        f"with the same Idempotency-Key {codes[1]}, again with a new key {codes[2]}"
    )
    all_ok &= codes == [200, 200, 409]
    orders = {
        r: _api(client, "GET", f"/api/orders/{r}")["status"]
        for r in ("order-A", "order-B", "order-C", "order-D", "order-E", "order-F")
    }
    console.print(f"orders: {orders}")
    all_ok &= orders == {
        "order-A": "paid",
        "order-B": "pending",
        "order-C": "pending",
        "order-D": "paid",
        "order-E": "paid",
        "order-F": "pending",  # captured 2000, then 100 refunded
    }
    console.print(
        "[bold green]every sample got its expected outcome[/bold green]"
        if all_ok
        else "[bold red]some samples did not get their expected outcome[/bold red]"
    )
    return all_ok


def _samples(stripe_secret: str, shop_secret: str) -> list[Sample]:
    now = int(datetime.now(UTC).timestamp())

    def stripe(what: str, fixture: str, event_id: str, intent: str, expected: str) -> Sample:
        event = json.loads((SAMPLES / f"{fixture}.json").read_text())
        event["id"] = event_id
        obj = event["data"]["object"]
        if obj.get("object") == "payment_intent":
            obj["id"] = intent
        elif "payment_intent" in obj:
            obj["payment_intent"] = intent
        body = json.dumps(event).encode()
        return Sample(
            what,
            "/webhooks/stripe",
            body,
            {
                "Stripe-Signature": sign_stripe(body, stripe_secret, now),
                "Content-Type": "application/json",
            },
            expected,
        )

    def shop(what: str, msg_id: str, kind: str, expected: str, **extra: Any) -> Sample:
        data = {"payment_reference": "shop-pay-C", "amount": 1500, "currency": "eur", **extra}
        body = json.dumps({"type": kind, "data": data}).encode()
        headers = sign_standard(body, msg_id, shop_secret, now)
        return Sample(what, "/webhooks/standard/shop", body, headers, expected)

    succeeded = stripe(
        "payment_intent.succeeded for A",
        "payment_intent.succeeded",
        "evt_demo_1",
        "pi_demo_A",
        "applied",
    )
    return [
        succeeded,
        Sample(
            "the same event again",
            succeeded.path,
            succeeded.body,
            succeeded.headers,
            "acknowledged_duplicate/same_event",
        ),
        Sample(
            "and once more",
            succeeded.path,
            succeeded.body,
            succeeded.headers,
            "acknowledged_duplicate/same_event",
        ),
        stripe(
            "charge.succeeded for A (another event)",
            "charge.succeeded",
            "evt_demo_2",
            "pi_demo_A",
            "acknowledged_duplicate/already_in_state",
        ),
        stripe(
            "payment_failed for A after it was confirmed",
            "payment_intent.payment_failed",
            "evt_demo_3",
            "pi_demo_A",
            "ignored/stale",
        ),
        stripe(
            "checkout.session.completed for B, 3000 for a 2000 payment",
            "checkout.session.completed",
            "evt_demo_4",
            "pi_demo_B",
            "rejected/amount_mismatch",
        ),
        stripe(
            "charge.dispute.created for A",
            "charge.dispute.created",
            "evt_demo_5",
            "pi_demo_A",
            "applied",
        ),
        stripe(
            "amount_capturable_updated for A: its authorisation, after the capture",
            "payment_intent.amount_capturable_updated",
            "evt_demo_7",
            "pi_demo_A",
            "acknowledged_duplicate/already_in_state",
        ),
        stripe(
            "confirmation before its payment is registered",
            "payment_intent.succeeded",
            "evt_demo_6",
            "pi_demo_E",
            "applied",
        ),
        stripe(
            "a refund of F before its capture (waits for it)",
            "charge.refund.updated",
            "evt_demo_8",
            "pi_demo_F",
            "applied",
        ),
        stripe(
            "payment_intent.succeeded for F: captured, which wakes the refund",
            "payment_intent.succeeded",
            "evt_demo_9",
            "pi_demo_F",
            "applied",
        ),
        shop("shop: payment.succeeded for C", "msg_demo_1", "payment.succeeded", "applied"),
        shop(
            "shop: the same message again",
            "msg_demo_1",
            "payment.succeeded",
            "acknowledged_duplicate/same_event",
        ),
        shop(
            "shop: payment.refunded for C",
            "msg_demo_2",
            "payment.refunded",
            "applied",
            refund_reference="shop-refund-1",
        ),
    ]


def _wait_for_outcomes(
    settings: Settings, ids: list[int], console: Console
) -> dict[int, dict[str, Any]]:
    engine = make_engine(settings.database)
    deadline = time.monotonic() + OUTCOME_TIMEOUT_S
    views: dict[int, dict[str, Any]] = {}
    with console.status("") as status:
        while True:
            with engine.connect() as conn:
                views = {i: v for i in ids if (v := queries.delivery(conn, i)) is not None}
            done = sum(1 for v in views.values() if v["outcome"])
            status.update(f"{done}/{len(ids)} deliveries have their outcome")
            if done == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    engine.dispose()
    return views


def _api(
    client: httpx.Client, method: str, path: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer = client.request(method, path, json=payload)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def _wait_ready(stack: Stack, console: Console) -> None:
    with console.status("starting the receiver, a worker and the sweeper …"):
        try:
            stack.wait_ready("receiver", timeout=60)
        except StackError as error:
            raise SystemExit(f"payhook demo: {error}") from None
