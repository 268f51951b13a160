"""The receiver on PostgreSQL and Redis, in-process: webhooks stored from the event loop
(tasks/storage/intake.py) and published from it (worker/web/publisher.py).

Each test runs the ASGI app with its lifespan (the pools opened as `payhook serve` opens them),
on a database of its own and the tests' Redis.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.integration.stack import STRIPE_SECRET, fresh_database, fresh_redis
from tests.unit.adyen.support import KEY, fixture_item, request_of, signed
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.stripe import sign_stripe
from worker.taskqueue.app import QUEUE, create_app
from worker.web.app import create_http_app

pytestmark = pytest.mark.integration

DELIVERY = (
    "SELECT provider, event_id, event_type, status, headers, body FROM deliveries WHERE id = %s"
)


def _stripe_event(n: int) -> bytes:
    return json.dumps(
        {
            "id": f"evt_intake_{n}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": f"pi_intake_{n}", "object": "payment_intent"}},
        }
    ).encode()


class Receiver:
    client: TestClient

    def __init__(self, runtime: ProcessRuntime, database: str) -> None:
        self.runtime = runtime
        self.conninfo = make_url(database).set(drivername="postgresql").render_as_string(False)
        self.published: list[int] = []
        self.uncommitted: list[int] = []

    def stripe(self, body: bytes) -> Any:
        timestamp = int(self.runtime.now().timestamp())
        headers = {
            "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, timestamp),
            "Content-Type": "application/json",
        }
        return self.client.post("/webhooks/stripe", content=body, headers=headers)

    def adyen_batch(self) -> Any:
        """An authorisation and a refund, signed, in one Adyen request."""
        items = [
            signed(fixture_item("authorisation-true.json")),
            signed(fixture_item("refund-true.json")),
        ]
        return self.client.post(
            "/webhooks/adyen",
            content=json.dumps(request_of(*items)),
            headers={"Content-Type": "application/json"},
        )

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def queued(self) -> list[int]:
        """The delivery ids of the task messages in the broker's queue, oldest first."""
        messages = redis.Redis.from_url(self.runtime.settings.broker).lrange(QUEUE, 0, -1)
        # Celery's message protocol 2: a base64 body of [args, kwargs, embed]; LPUSHed.
        bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in messages]
        return [int(args[0]) for args, _, _ in reversed(bodies)]

    def terminate_webhook_connections(self) -> int:
        """What a PostgreSQL restart or a proxy does to idle connections: end them."""
        rows = self.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(rows)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    database = fresh_database("intake")
    settings = Settings(
        data_dir=tmp_path,
        database_url=database,
        broker_url=fresh_redis(),
        stripe_webhook_secrets=STRIPE_SECRET,
        adyen_hmac_keys=KEY,
        db_pool_size=3,
    )
    runtime = ProcessRuntime(settings, create_app(settings), fixed_pool=True)
    harness = Receiver(runtime, database)
    publish_once = runtime.publish_once

    def checked(delivery_id: int) -> None:
        # Another connection must see the delivery when its task is published.
        if not harness.query("SELECT id FROM deliveries WHERE id = %s", delivery_id):
            harness.uncommitted.append(delivery_id)
        publish_once(delivery_id)
        harness.published.append(delivery_id)

    runtime.publish_once = checked  # type: ignore[method-assign]
    with TestClient(create_http_app(runtime)) as client:  # the lifespan: both pools opened
        harness.client = client
        yield harness
    assert harness.uncommitted == [], "published before the commit"


def test_a_webhook_is_stored_then_published_from_the_event_loop(receiver: Receiver) -> None:
    response = receiver.stripe(_stripe_event(1))

    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    ((provider, event_id, event_type, status, headers, body),) = receiver.query(
        DELIVERY, delivery_id
    )
    assert (provider, event_id, event_type, status) == (
        "stripe",
        "evt_intake_1",
        "payment_intent.succeeded",
        "received",
    )
    assert bytes(body) == _stripe_event(1)
    assert json.loads(headers)["content-type"] == "application/json"
    assert receiver.published == [delivery_id]
    assert receiver.queued() == [delivery_id]


def test_an_adyen_batch_is_stored_in_one_transaction_and_each_item_published(
    receiver: Receiver,
) -> None:
    response = receiver.adyen_batch()

    assert response.status_code == 200, response.text
    stored = receiver.query("SELECT id, event_id FROM deliveries ORDER BY id")
    assert [event_id for _, event_id in stored] == [
        "123456789:AUTHORISATION:true",
        "PSP_REFERENCE:REFUND:true",
    ]
    assert receiver.queued() == [delivery_id for delivery_id, _ in stored]


def test_connections_ended_under_the_receiver_are_replaced_without_a_503(
    receiver: Receiver,
) -> None:
    first = receiver.stripe(_stripe_event(1))
    assert first.status_code == 202
    assert receiver.terminate_webhook_connections() >= 3  # the pool, and the API's

    answers = [receiver.stripe(_stripe_event(n)).status_code for n in range(2, 6)]

    assert answers == [202] * 4
    assert receiver.query("SELECT count(*) FROM deliveries") == [(5,)]
    assert len(receiver.queued()) == 5


def test_a_database_that_does_not_answer_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:9/payhook_nowhere",
        broker_url=fresh_redis(),
        stripe_webhook_secrets=STRIPE_SECRET,
    )
    runtime = ProcessRuntime(settings, create_app(settings))
    client = TestClient(create_http_app(runtime))  # no lifespan: the pool opens on first use
    body = _stripe_event(1)
    headers = {
        "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, int(runtime.now().timestamp())),
        "Content-Type": "application/json",
    }

    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.json() == {"error": "database unavailable, try again later"}
    assert redis.Redis.from_url(settings.broker).llen(QUEUE) == 0


def test_an_adyen_batch_is_stored_all_or_none(receiver: Receiver) -> None:
    # The database refuses the second item (here: a constraint added for the test).
    receiver.query(
        "ALTER TABLE deliveries ADD CONSTRAINT test_no_refund"
        " CHECK (event_id NOT LIKE '%%REFUND%%')"
    )
    response = receiver.adyen_batch()

    assert response.status_code == 503  # Adyen retries the whole batch
    assert receiver.query("SELECT count(*) FROM deliveries") == [(0,)]
    assert receiver.queued() == []
