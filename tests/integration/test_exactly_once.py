"""Against PostgreSQL, Redis or RabbitMQ and real worker processes, driven only through signed
HTTP."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from domain.providers import stripe
from tasks.registering import create_order, create_payment
from tasks.storage.engine import make_engine
from tasks.storage.tables import deliveries, outcomes, payment_aliases
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.integration.stack import STRIPE_SECRET, Broker, Stack, running_stack
from worker.signing.stripe import sign_stripe

pytestmark = pytest.mark.integration


def stripe_event(fixture: str, event_id: str, intent: str) -> bytes:
    event = fixture_json(f"stripe/events/{fixture}.json")
    event["id"] = event_id
    obj = event["data"]["object"]
    if obj["object"] == "payment_intent":
        obj["id"] = intent
    else:
        obj["payment_intent"] = intent
    return json.dumps(event).encode()


def post_signed(stack: Stack, body: bytes, *, timestamp: int | None = None) -> int:
    signature = sign_stripe(body, STRIPE_SECRET, timestamp or int(time.time()))
    with stack.client() as client:
        answer = client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
        )
    return answer.status_code


def register_payment(stack: Stack, order: str, intent: str, amount: int = 2000) -> int:
    with stack.client() as client:
        client.post(
            "/api/orders", json={"reference": order, "total": amount, "currency": "usd"}
        ).raise_for_status()
        answer = client.post(
            "/api/payments",
            json={
                "order_reference": order,
                "provider": "stripe",
                "provider_reference": intent,
                "amount": amount,
                "currency": "usd",
            },
        )
        answer.raise_for_status()
        payment_id: int = answer.json()["id"]
        return payment_id


@pytest.mark.parametrize("broker", ["redis", "amqp"])
@pytest.mark.parametrize("worker_processes", [1, 2])
def test_fifty_copies_and_five_other_events_confirm_the_payment_once(
    tmp_path: Path, worker_processes: int, broker: Broker
) -> None:
    with running_stack(
        tmp_path,
        worker_processes=worker_processes,
        name=f"payhook_it_once_{broker}_{worker_processes}",
        broker=broker,
    ) as stack:
        fifty_copies_and_five_other_events(stack, f"{broker}, {worker_processes} worker(s)")


def test_fifty_copies_through_pgbouncer_in_transaction_mode_confirm_the_payment_once(
    tmp_path: Path,
) -> None:
    # Each transaction may get another server connection: no session state may be relied on
    # (deploy/SCALING.md says what that takes of payhook and of PgBouncer).
    # PgBouncer drops the lock timeout payhook sends at connect: it is set on the database (or
    # the role), as deploy/SCALING.md says, and every pooled connection has it. PgBouncer 1.18
    # does not carry prepared statements across server connections: payhook prepares none.
    with running_stack(
        tmp_path,
        worker_processes=2,
        name="payhook_it_once_pgbouncer",
        pgbouncer=True,
        settings={"PAYHOOK_DB_PREPARED_STATEMENTS": "false"},
        database_settings={"lock_timeout": "5000"},
    ) as stack:
        fifty_copies_and_five_other_events(stack, "through PgBouncer, 2 workers")
        assert "failed permanently" not in (tmp_path / "worker.log").read_text()
        engine = make_engine(stack.env["PAYHOOK_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "5s"
        finally:
            engine.dispose()


def fifty_copies_and_five_other_events(stack: Stack, label: str) -> None:
    if True:
        payment_id = register_payment(stack, "order-1", "pi_it_1")
        copy = stripe_event("payment_intent.succeeded", "evt_it_same", "pi_it_1")
        others = [
            stripe_event("payment_intent.succeeded", f"evt_it_pi_{i}", "pi_it_1") for i in range(2)
        ]
        others += [stripe_event("charge.succeeded", f"evt_it_ch_{i}", "pi_it_1") for i in range(3)]
        bodies = [copy] * 50 + others

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(lambda body: post_signed(stack, body), bodies))
        assert answers == [202] * 55
        stack.wait_for_outcomes(55)
        elapsed = time.monotonic() - started

        counts = stack.outcome_counts()
        print(f"\n{label}: 55 deliveries -> {counts} in {elapsed:.2f}s")
        assert counts.get("applied", 0) == 1
        same_event = counts.get("acknowledged_duplicate/same_event", 0)
        already = counts.get("acknowledged_duplicate/already_in_state", 0)
        assert same_event + already == 54
        assert same_event in (49, 50)  # 49 when one of the five other events applied first
        assert stack.count(outcomes) == stack.count(deliveries) == 55

        with stack.client() as client:
            payment = client.get(f"/api/payments/{payment_id}").json()
            order = client.get("/api/orders/order-1").json()
            confirm = client.post(f"/api/payments/{payment_id}/confirm")
        assert payment["state"] == "confirmed"
        assert [o["kind"] for o in payment["outcomes"]].count("applied") == 1
        assert order["status"] == "paid"
        assert order["paid_amount"] == 2000
        assert confirm.status_code == 409
        assert confirm.json()["status"] == "already_confirmed"


def test_forged_stale_and_oversized_requests_store_nothing(tmp_path: Path) -> None:
    with running_stack(tmp_path, worker_processes=1, name="payhook_it_refused") as stack:
        body = stripe_event("payment_intent.succeeded", "evt_it_refused", "pi_it_refused")
        with stack.client() as client:
            forged = client.post(
                "/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": sign_stripe(body, "whsec_not_ours", int(time.time()))},
            )
            unsigned = client.post("/webhooks/stripe", content=body)
            huge = b'{"id": "evt_big", "pad": "' + b"x" * (1024 * 1024) + b'"}'
            oversized = client.post(
                "/webhooks/stripe",
                content=huge,
                headers={"Stripe-Signature": sign_stripe(huge, STRIPE_SECRET, int(time.time()))},
            )
        # Well past the 300 s tolerance: the server reads its clock a little after ours, so a
        # timestamp 301 s ahead may be only 300 s ahead by the time it is checked.
        stale = post_signed(stack, body, timestamp=int(time.time()) - 330)
        future = post_signed(stack, body, timestamp=int(time.time()) + 330)

        assert (forged.status_code, unsigned.status_code, oversized.status_code) == (401, 401, 413)
        assert (stale, future) == (401, 401)
        assert "error" in forged.json()
        assert STRIPE_SECRET not in forged.text + unsigned.text + oversized.text
        assert stack.count(deliveries) == 0


def wait_until_deferred(client: httpx.Client, delivery_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        shown: dict[str, Any] = client.get(f"/api/deliveries/{delivery_id}").json()
        if shown["status"] == "deferred":
            return shown
        time.sleep(0.1)
    raise AssertionError(f"delivery {delivery_id} was not deferred within 15 s: {shown}")


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_confirmation_that_arrives_before_its_payment_is_applied_once_registered(
    tmp_path: Path, broker: Broker
) -> None:
    # The deferred delivery waits in the database; registering its payment wakes it (the API
    # publishes it after the registration's commit).
    with running_stack(
        tmp_path, worker_processes=1, name=f"payhook_it_late_{broker}", broker=broker
    ) as stack:
        body = stripe_event("payment_intent.succeeded", "evt_it_early", "pi_it_late")
        signature = sign_stripe(body, STRIPE_SECRET, int(time.time()))
        with stack.client() as client:
            answer = client.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
            )
            assert answer.status_code == 202
            delivery_id = answer.json()["delivery_id"]
            # Deferred, as the API shows it (tried, waiting, no outcome), not given up.
            waiting = wait_until_deferred(client, delivery_id)
        assert (waiting["outcome"], waiting["attempts"] >= 1) == (None, True)
        assert stack.count(outcomes) == 0
        register_payment(stack, "order-late", "pi_it_late")
        stack.wait_for_outcomes(1, timeout=60)
        assert stack.outcome_counts() == {"applied": 1}


def refund_event(event_id: str, intent: str, amount: int) -> bytes:
    event = fixture_json("stripe/events/charge.refund.updated.json")
    event["id"] = event_id
    event["data"]["object"].update(
        id=f"re_{event_id}", payment_intent=intent, charge=f"ch_{intent}", amount=amount
    )
    return json.dumps(event).encode()


def test_a_refund_before_its_capture_waits_and_the_capture_wakes_it(tmp_path: Path) -> None:
    with running_stack(tmp_path, worker_processes=2, name="payhook_it_wakes") as stack:
        register_payment(stack, "order-wakes", "pi_it_wakes")
        assert post_signed(stack, refund_event("evt_it_refund", "pi_it_wakes", 500)) == 202
        deadline = time.monotonic() + 30
        while stack.count(deliveries, deliveries.c.status == "deferred") == 0:
            assert time.monotonic() < deadline, f"never deferred; logs in {stack.logs}"
            time.sleep(0.2)
        assert stack.count(outcomes) == 0  # waiting for the capture, not rejected

        capture = stripe_event("payment_intent.succeeded", "evt_it_capture", "pi_it_wakes")
        assert post_signed(stack, capture) == 202
        # No beat runs in this stack: only the capture's wake can publish the refund again.
        stack.wait_for_outcomes(2, timeout=60)
        with stack.client() as client:
            order = client.get("/api/orders/order-wakes").json()
        assert stack.outcome_counts() == {"applied": 2}
        assert (order["paid_amount"], order["refunded_amount"]) == (2000, 500)
        # The capture taught the payment its charge id (written with the change it applied).
        charge = stripe.parse(capture).alias
        assert charge is not None
        assert stack.count(payment_aliases, payment_aliases.c.alias == charge) == 1


def test_the_beat_publishes_a_waiting_delivery_when_its_time_comes(tmp_path: Path) -> None:
    with running_stack(tmp_path, worker_processes=1, name="payhook_it_beat") as stack:
        body = stripe_event("payment_intent.succeeded", "evt_it_beat", "pi_it_beat")
        assert post_signed(stack, body) == 202
        deadline = time.monotonic() + 30
        while stack.count(deliveries, deliveries.c.status == "deferred") == 0:
            assert time.monotonic() < deadline, f"never deferred; logs in {stack.logs}"
            time.sleep(0.2)
        # Registered behind payhook's back (no API call, so nothing wakes the delivery): only
        # the beat's wake task, at the delivery's next attempt, can find it the payment.
        engine, now = make_engine(stack.database_url), datetime.now(UTC)
        try:
            uow = UnitOfWork
            create_order(uow(engine), reference="order-beat", total=2000, currency="USD", now=now)
            create_payment(
                uow(engine),
                order_reference="order-beat",
                provider="stripe",
                provider_reference="pi_it_beat",
                amount=2000,
                currency="USD",
                now=now,
            )
        finally:
            engine.dispose()
        time.sleep(3)  # past the delivery's first backoff (at most 2 s)
        assert stack.count(outcomes) == 0  # nothing publishes it without the beat
        stack.start_beat()
        stack.wait_for_outcomes(1, timeout=60)
        assert stack.outcome_counts() == {"applied": 1}


def test_refunds_and_captures_racing_in_any_order_lose_no_wake(tmp_path: Path) -> None:
    """Each refund races its capture on two worker processes: whichever commits first, the
    refund is applied, by its own attempt or by the capture's wake (no beat runs to rescue a
    lost one)."""
    payments = 8
    with running_stack(tmp_path, worker_processes=2, name="payhook_it_race") as stack:
        for n in range(payments):
            register_payment(stack, f"order-race-{n}", f"pi_it_race_{n}")
        bodies = [
            refund_event(f"evt_it_race_r{n}", f"pi_it_race_{n}", 500) for n in range(payments)
        ]
        bodies += [
            stripe_event("payment_intent.succeeded", f"evt_it_race_c{n}", f"pi_it_race_{n}")
            for n in range(payments)
        ]
        random.Random(10).shuffle(bodies)
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(lambda body: post_signed(stack, body), bodies)) == {202}

        stack.wait_for_outcomes(2 * payments, timeout=90)
        assert stack.outcome_counts() == {"applied": 2 * payments}
        with stack.client() as client:
            orders = [client.get(f"/api/orders/order-race-{n}").json() for n in range(payments)]
        assert {(o["paid_amount"], o["refunded_amount"]) for o in orders} == {(2000, 500)}
        assert stack.count(deliveries, deliveries.c.status != "processed") == 0
        # Some refunds did wait for their capture (3 or 4 of 8 in trial runs), so the waking
        # path was raced, not only the straight one.
        assert stack.count(deliveries, deliveries.c.attempts > 1) >= 1
