"""Host notifications end to end: PostgreSQL, Redis, real workers and beat, and a real HTTP
endpoint that verifies every message with the `standardwebhooks` library."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from standardwebhooks.webhooks import Webhook

from tasks.storage import outbox
from tasks.storage.outbox import Written
from tasks.storage.uow import UnitOfWork
from tests.integration.stack import Stack, fresh_database, running_stack
from tests.integration.test_exactly_once import post_signed, register_payment, stripe_event

pytestmark = pytest.mark.integration

NOTIFY_SECRET = "whsec_" + base64.b64encode(b"integration-notify-secret-32bytes").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-secret-before-the-rotation!!").decode()


class HostEndpoint:
    """What a host would run: verify, then answer `answer` (or hold the request `hold` s)."""

    def __init__(self) -> None:
        self.answer = 204
        self.hold = 0.0
        self.received: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, body), verified
        self.refused = 0
        self.unverified: list[str] = []
        self.arrived = threading.Event()
        self.lock = threading.Lock()

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        try:
            message = Webhook(NOTIFY_SECRET).verify(body, headers)
        except Exception as error:
            self.unverified.append(f"{type(error).__name__}: {error}")
            return 400
        self.arrived.set()
        if self.hold:
            time.sleep(self.hold)
        with self.lock:
            if not 200 <= self.answer < 300:
                self.refused += 1
                return self.answer
            self.received.append((headers["webhook-id"], message))
        return self.answer

    def ids(self) -> list[str]:
        with self.lock:
            return [message_id for message_id, _ in self.received]

    def first_receipts(self) -> list[dict[str, Any]]:
        """Each notification once (the host deduplicates by webhook-id), as first received."""
        seen: dict[str, dict[str, Any]] = {}
        with self.lock:
            for message_id, message in self.received:
                seen.setdefault(message_id, message)
        return list(seen.values())


@contextmanager
def host_endpoint() -> Iterator[tuple[HostEndpoint, str]]:
    endpoint = HostEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            status = endpoint.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint, f"http://127.0.0.1:{server.server_port}/payhook"
    finally:
        server.shutdown()
        server.server_close()


def notify_settings(url: str) -> dict[str, str]:
    return {
        "PAYHOOK_NOTIFY_URL": url,
        "PAYHOOK_NOTIFY_SECRET": f"{NOTIFY_SECRET},{OLD_SECRET}",
        "PAYHOOK_NOTIFY_INTERVAL_S": "1",
    }


def start_beat(stack: Stack) -> None:
    stack.start_beat()


def wait_until(what: str, done: Callable[[], bool], stack: Stack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        stack.check_alive()
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s; logs in {stack.logs}")


def feed(stack: Stack) -> list[dict[str, Any]]:
    with stack.client() as client:
        answer = client.get("/api/events", params={"after": 0, "limit": 1000})
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()
    return events


def test_a_storm_of_duplicates_tells_each_order_paid_once_signed_and_verified(
    tmp_path: Path,
) -> None:
    with (
        host_endpoint() as (endpoint, url),
        running_stack(
            tmp_path,
            worker_processes=2,
            name="payhook_it_notify_storm",
            settings=notify_settings(url),
        ) as stack,
    ):
        orders = [f"order-{n}" for n in range(4)]
        bodies = []
        for n, order in enumerate(orders):
            register_payment(stack, order, f"pi_notify_{n}")
            copy = stripe_event("payment_intent.succeeded", f"evt_storm_{n}", f"pi_notify_{n}")
            other = stripe_event("charge.succeeded", f"evt_storm_ch_{n}", f"pi_notify_{n}")
            bodies += [copy] * 15 + [other] * 5
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda body: post_signed(stack, body), bodies)) == {202}
        stack.wait_for_outcomes(len(bodies))
        wait_until("2 notifications per order", lambda: len(endpoint.ids()) >= 8, stack)
        time.sleep(2)  # anything sent twice would have arrived by now

        assert endpoint.unverified == []
        assert len(endpoint.ids()) == 8  # no order was told twice: no duplicate send either
        told = Counter(
            (message["data"]["order_reference"], message["type"])
            for _, message in endpoint.received
        )
        assert told == Counter(
            {(order, kind): 1 for order in orders for kind in ("payment.confirmed", "order.paid")}
        )
        for message in endpoint.first_receipts():
            if message["type"] == "order.paid":
                assert message["data"]["order_sequence"] == 2
        # The pull feed lists the same notifications, under the same ids, in id order.
        events = feed(stack)
        assert sorted(str(event["id"]) for event in events) == sorted(endpoint.ids())
        assert [event["id"] for event in events] == sorted(event["id"] for event in events)


def test_an_endpoint_that_refuses_for_a_while_gets_everything_after_in_sequence(
    tmp_path: Path,
) -> None:
    with (
        host_endpoint() as (endpoint, url),
        running_stack(
            tmp_path,
            worker_processes=2,
            name="payhook_it_notify_refuses",
            settings=notify_settings(url),
        ) as stack,
    ):
        start_beat(stack)
        endpoint.answer = 503
        orders = [f"order-{n}" for n in range(3)]
        for n, order in enumerate(orders):
            register_payment(stack, order, f"pi_refused_{n}")
        events = []
        for n in range(3):
            intent = f"pi_refused_{n}"
            events += [
                stripe_event("payment_intent.succeeded", f"evt_ok_{n}", intent),
                stripe_event("charge.refunded", f"evt_refund_{n}", intent),
            ]
        for body in events:  # in order: each confirmation before its refund
            assert post_signed(stack, body) == 202
            time.sleep(0.3)
        stack.wait_for_outcomes(len(events))
        wait_until("the endpoint refused some", lambda: endpoint.refused >= 3, stack)
        endpoint.answer = 200
        wait_until("4 per order", lambda: len(endpoint.first_receipts()) >= 12, stack, 120)

        assert endpoint.unverified == []
        sequences: dict[str, list[int]] = {}
        for message in endpoint.first_receipts():
            data = message["data"]
            sequences.setdefault(data["order_reference"], []).append(data["order_sequence"])
        assert sequences == {order: [1, 2, 3, 4] for order in orders}
        kinds = [message["type"] for message in endpoint.first_receipts()]
        assert Counter(kinds) == Counter(
            {"payment.confirmed": 3, "order.paid": 3, "payment.refunded": 3, "order.unpaid": 3}
        )


def test_a_worker_killed_while_relaying_resends_under_the_same_webhook_id(
    tmp_path: Path,
) -> None:
    with (
        host_endpoint() as (endpoint, url),
        running_stack(
            tmp_path,
            worker_processes=1,
            name="payhook_it_notify_killed",
            settings=notify_settings(url),
        ) as stack,
    ):
        start_beat(stack)
        endpoint.hold = 3.0  # the first post is still open when the worker dies
        register_payment(stack, "order-1", "pi_killed")
        assert post_signed(stack, stripe_event("payment_intent.succeeded", "e1", "pi_killed"))
        wait_until("the first post", endpoint.arrived.is_set, stack)
        command = list(stack.named["worker"].args)  # type: ignore[arg-type]
        stack.kill("worker")  # SIGKILL to the worker and its pool, mid-post
        endpoint.hold = 0.0
        stack.start("worker", command)
        wait_until("both notifications", lambda: len(endpoint.first_receipts()) >= 2, stack, 120)

        listed = [str(event["id"]) for event in feed(stack)]
        assert set(endpoint.ids()) == set(listed)  # nothing under an id the outbox lacks
        assert [m["type"] for m in endpoint.first_receipts()] == ["payment.confirmed", "order.paid"]
        # The post the killed worker made, and again after its lease ran out, under one id.
        assert Counter(endpoint.ids())[listed[0]] >= 2


def test_the_feed_never_lists_past_a_notification_that_commits_later(tmp_path: Path) -> None:
    """On PostgreSQL: a transaction that wrote first and commits last holds the feed back."""
    engine = create_engine(fresh_database("payhook_it_notify_feed"))
    now = datetime.now(UTC)
    try:
        with UnitOfWork(engine) as uow:
            order_ids = [
                uow.payments.add_order(reference=f"o{n}", total=1, currency="EUR", now=now)
                for n in range(2)
            ]
            payment_ids = [
                uow.payments.add_payment(
                    order_id=order_id,
                    provider="shop",
                    provider_reference=f"p{order_id}",
                    amount=1,
                    currency="EUR",
                    now=now,
                )
                for order_id in order_ids
            ]
            uow.commit()

        def write(uow: UnitOfWork, n: int) -> None:
            uow.outbox.add(
                order_id=order_ids[n],
                payment_id=payment_ids[n],
                delivery_id=None,
                items=[Written("payment.confirmed", json.dumps({"order_reference": f"o{n}"}))],
                now=now,
            )
            # Written now (the hot path's INSERT waits for the statement that finishes its
            # delivery, in a transaction that holds its id since its first write).
            uow.outbox.flush()

        def listed() -> list[int]:
            with engine.connect() as conn:
                return [row.id for row in outbox.feed(conn, after=0, limit=1000)]

        slow, fast = UnitOfWork(engine), UnitOfWork(engine)
        with slow:
            write(slow, 0)  # first to write: the smaller id
            with fast:
                write(fast, 1)
                fast.commit()
            assert listed() == []  # the later id is committed, but the earlier may still be
            slow.commit()
        ids = listed()
        assert len(ids) == 2
        assert ids == sorted(ids)
    finally:
        engine.dispose()
