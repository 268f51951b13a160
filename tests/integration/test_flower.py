"""`payhook flower` on PostgreSQL, Redis, a real prefork worker and a real Flower process:
every task's outcome is visible through Flower's API, to authenticated readers only."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.fixture_files import fixture_json
from tests.integration.stack import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    SHOP_SECRET,
    STRIPE_SECRET,
    Stack,
    running_stack,
    start_flower,
)
from worker.signing.standard import sign_standard
from worker.signing.stripe import sign_stripe

pytestmark = pytest.mark.integration

NAME = "payhook_it_flower"
AUTH = (FLOWER_USER, FLOWER_PASSWORD)


def stripe_confirmation(event_id: str, intent: str) -> bytes:
    event = fixture_json("stripe/events/payment_intent.succeeded.json")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent
    return json.dumps(event).encode()


def post_stripe(stack: Stack, body: bytes) -> int:
    signature = sign_stripe(body, STRIPE_SECRET, int(time.time()))
    with stack.client() as client:
        return client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
        ).status_code


def post_shop(stack: Stack, message_id: str, reference: str) -> int:
    body = json.dumps(
        {
            "type": "payment.succeeded",
            "data": {"payment_reference": reference, "amount": 1500, "currency": "eur"},
        }
    ).encode()
    headers = sign_standard(body, message_id, SHOP_SECRET, int(time.time()))
    with stack.client() as client:
        return client.post("/webhooks/standard/shop", content=body, headers=headers).status_code


def register(stack: Stack, order: str, provider: str, ref: str, amount: int, cur: str) -> None:
    with stack.client() as client:
        client.post(
            "/api/orders", json={"reference": order, "total": amount, "currency": cur}
        ).raise_for_status()
        client.post(
            "/api/payments",
            json={
                "order_reference": order,
                "provider": provider,
                "provider_reference": ref,
                "amount": amount,
                "currency": cur,
            },
        ).raise_for_status()


def succeeded_tasks(flower: str, expected: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The succeeded process_delivery tasks Flower knows of, once there are `expected`."""
    deadline = time.monotonic() + timeout
    tasks: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{flower}/api/tasks",
            params={"taskname": "payhook.process_delivery", "state": "SUCCESS"},
            auth=AUTH,
            timeout=5,
        )
        answer.raise_for_status()
        tasks = list(answer.json().values())
        if len(tasks) >= expected:
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"flower shows {len(tasks)} of {expected} succeeded tasks")


def recorded_outcomes(stack: Stack) -> dict[int, tuple[str, str | None]]:
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT delivery_id, kind, reason FROM outcomes"))
            return {int(d): (kind, reason) for d, kind, reason in rows}
    finally:
        engine.dispose()


def test_flower_shows_every_outcome_to_authenticated_readers_and_refuses_control(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path, worker_processes=2, name=NAME) as stack:
        flower = start_flower(stack, worker=NAME)
        register(stack, "order-fl-1", "stripe", "pi_fl_1", 2000, "usd")
        register(stack, "order-fl-2", "shop", "shop-fl-2", 1500, "eur")
        confirmation = stripe_confirmation("evt_fl_same", "pi_fl_1")
        answers = [post_stripe(stack, confirmation) for _ in range(4)]
        answers += [post_shop(stack, "msg_fl_same", "shop-fl-2") for _ in range(3)]
        assert answers == [202] * 7
        stack.wait_for_outcomes(7, timeout=60)

        tasks = succeeded_tasks(flower, 7)
        results = [ast.literal_eval(task["result"]) for task in tasks]  # Celery sends a repr
        by_delivery = {result["delivery_id"]: result for result in results}
        recorded = recorded_outcomes(stack)
        assert {d: (r["kind"], r["reason"]) for d, r in by_delivery.items()} == recorded
        duplicates = sorted(
            d for d, r in by_delivery.items() if r["kind"] == "acknowledged_duplicate"
        )
        assert len(duplicates) == 5  # 3 copies of the Stripe event, 2 of the shop message
        assert all(by_delivery[d]["reason"] == "same_event" for d in duplicates)
        firsts = {by_delivery[d]["duplicate_of"] for d in duplicates}
        assert {by_delivery[f]["kind"] for f in firsts} == {"applied"}
        assert {task["worker"].partition("@")[0] for task in tasks} == {NAME}

        # Nobody reads without the password.
        for auth in (None, (FLOWER_USER, "wrong-password")):
            answer = httpx.get(f"{flower}/api/tasks", auth=auth, timeout=5)
            assert answer.status_code == 401, answer.text
            assert "evt_fl_same" not in answer.text
        assert httpx.get(f"{flower}/", auth=AUTH, timeout=5).status_code == 200

        # Nobody changes anything, even with the password.
        worker, task_id = tasks[0]["worker"], tasks[0]["uuid"]
        for path in (
            f"/api/worker/shutdown/{worker}",
            f"/api/worker/pool/shrink/{worker}",
            f"/api/worker/pool/restart/{worker}",
            f"/api/task/revoke/{task_id}?terminate=true",
            f"/api/task/rate-limit/{worker}?taskname=payhook.process_delivery&ratelimit=1/h",
            "/api/task/async-apply/payhook.sweep",
        ):
            for auth in (AUTH, None):
                answer = httpx.post(f"{flower}{path}", auth=auth, timeout=5)
                assert answer.status_code == 403, (path, answer.status_code, answer.text)
                assert "read-only" in answer.text  # refused before Flower's handler ran
        for method in ("PUT", "DELETE", "PATCH"):
            answer = httpx.request(
                method, f"{flower}/api/worker/shutdown/{worker}", auth=AUTH, timeout=5
            )
            assert answer.status_code == 403

        # The worker is still there, with its whole pool, and still processes deliveries.
        time.sleep(1.0)
        stack.check_alive()
        assert post_stripe(stack, stripe_confirmation("evt_fl_after", "pi_fl_1")) == 202
        stack.wait_for_outcomes(8, timeout=60)
        assert recorded_outcomes(stack)[max(recorded_outcomes(stack))] == (
            "acknowledged_duplicate",
            "already_in_state",
        )
