"""A payhook stack for fault tests: a broker of its own (a private Redis, or a fresh vhost on the
shared RabbitMQ), a database of its own on a private PostgreSQL, and `payhook serve`, `worker`
and `beat` processes that a test starts, stops and kills by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import kombu
import psycopg
import pytest
import redis
from amqp.exceptions import NotFound
from kombu.transport.native_delayed_delivery import MAX_LEVEL, level_name

from tasks.storage.tables import outcomes
from tests.faults.servers import PostgresServer, RedisServer, wait_until
from tests.fixture_files import fixture_json
from tests.integration.stack import (
    API_TOKEN,
    SHOP_SECRET,
    STRIPE_SECRET,
    Broker,
    Stack,
    drop_amqp,
    fresh_amqp,
    rabbitmq_unacknowledged,
    rabbitmqctl,
    scoped,
)
from worker.signing.stripe import sign_stripe
from worker.taskqueue.app import DEAD_LETTER, QUEUE

REPO = Path(__file__).resolve().parents[2]
HOOKS = "tests.faults.worker_hooks"

# For a fault that plays out alike on either broker: the test runs once on each (ids redis,
# amqp). Any other fault test runs on Redis only, the default of the `broker` fixture.
on_both_brokers = pytest.mark.parametrize("broker", ["redis", "amqp"], indirect=True)
# RabbitMQ's queues a task message may wait in: the task queue, and the levels of native
# delayed delivery, where a countdown retry waits out its delay.
AMQP_TASK_QUEUES = (QUEUE, *(level_name(level) for level in range(MAX_LEVEL + 1)))

# Short waits everywhere, so that a fault plays out in seconds. The visibility timeout (Redis
# only) must exceed the longest countdown (2 s) plus the time limit (15 s): payhook checks that
# at start.
FAST_SETTINGS = {
    "PAYHOOK_TASK_TIME_LIMIT_S": "15",
    "PAYHOOK_DEFERRAL_CAP_S": "2",
    "PAYHOOK_TRANSIENT_CAP_S": "2",
    "PAYHOOK_VISIBILITY_TIMEOUT_S": "18",
    "PAYHOOK_SWEEP_AFTER_S": "2",
    "PAYHOOK_SWEEP_INTERVAL_S": "1",
    "PAYHOOK_DB_LOCK_TIMEOUT_MS": "1000",
    "PAYHOOK_DB_POOL_SIZE": "2",
}


class FaultStack(Stack):
    """The harness's stack on private servers, whose processes a test starts, stops and kills
    by name; its workers load the fault hooks (tests/faults/worker_hooks.py)."""

    def __init__(
        self,
        database_url: str,
        env: dict[str, str],
        logs: Path,
        *,
        broker: Broker,
        postgres: PostgresServer,
        faults: Path,
        redis_server: RedisServer | None = None,  # broker "redis"
        vhost: str | None = None,  # broker "amqp"
    ) -> None:
        super().__init__(database_url, env, logs, cwd=REPO)
        self.broker = broker
        self.postgres = postgres
        self.faults = faults
        self.redis_server = redis_server
        self.vhost = vhost
        self._http: httpx.Client | None = None

    # ----------------------------------------------------------------- processes

    def start_worker(  # type: ignore[override]
        self, name: str, *, concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        return super().start_worker(name, concurrency=concurrency, extra=("--include", HOOKS))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        for name in list(self.named):
            self.kill(name)
        if self.redis_server is not None:
            self.redis_server.kill()
        if self.vhost is not None:
            drop_amqp(self.vhost)

    # ----------------------------------------------------------------- broker

    @property
    def redis(self) -> RedisServer:
        """The private Redis, for the faults that stop or restart it."""
        assert self.redis_server is not None, f"a Redis-only fault, on {self.broker}"
        return self.redis_server

    @property
    def broker_url(self) -> str:
        return self.env["PAYHOOK_BROKER_URL"]

    def broker_messages(self) -> tuple[int, int]:
        """(waiting, handed out): the task messages the broker holds for a worker to take, and
        those it delivered to a worker that has not acknowledged them yet.

        On Redis a message with a countdown is handed out at once (the worker holds it until its
        ETA); on RabbitMQ it waits in the delayed-delivery queues, and counts as waiting.
        """
        if self.vhost is None:
            client = redis.Redis(port=self.redis.port)
            return int(client.llen(QUEUE)), int(client.hlen("unacked"))
        return self.amqp_ready(*AMQP_TASK_QUEUES), rabbitmq_unacknowledged(self.vhost)

    def amqp_ready(self, *queues: str) -> int:
        """Messages ready in these RabbitMQ queues now (passive declares; a queue not declared
        yet holds none)."""
        ready = 0
        with kombu.Connection(self.broker_url, connect_timeout=5) as connection:
            for queue in queues:
                channel = connection.channel()
                try:
                    ready += channel.queue_declare(queue=queue, passive=True).message_count
                except NotFound:
                    continue  # RabbitMQ closed the channel
                channel.close()
        return ready

    def stop_broker(self) -> None:
        """The broker goes away. Redis stops (and restarts empty). The shared RabbitMQ must not
        be stopped: it closes every connection to this stack's vhost and refuses new ones, which
        is what payhook's processes see of a broker that is down."""
        if self.vhost is None:
            self.redis.stop()
            return
        rabbitmqctl("set_vhost_limits", "--vhost", self.vhost, '{"max-connections": 0}')
        rabbitmqctl(
            "close_all_connections", "--vhost", self.vhost, "payhook fault test: broker down"
        )

    def start_broker(self) -> None:
        if self.vhost is None:
            self.redis.start()
        else:
            rabbitmqctl("clear_vhost_limits", "--vhost", self.vhost)

    def dead_lettered(self) -> int:
        """Task messages RabbitMQ moved to payhook.dead (past PAYHOOK_DELIVERY_LIMIT)."""
        return self.amqp_ready(DEAD_LETTER)

    # ----------------------------------------------------------------- faults

    def arm(self, point: str, *deliveries: int | str, pause_s: float | None = None) -> None:
        """Arm a fault point of tests/faults/worker_hooks.py for these deliveries (or "*")."""
        seconds = "" if pause_s is None else f" {pause_s}"
        lines = "".join(f"{d}{seconds}\n" for d in deliveries)
        (self.faults / f"{point}.tmp").write_text(lines)
        (self.faults / f"{point}.tmp").replace(self.faults / point)

    def disarm(self, point: str) -> None:
        (self.faults / point).unlink(missing_ok=True)

    def paused_pids(self, point: str, count: int = 1, timeout: float = 30) -> dict[int, int]:
        """{delivery id: pid} of the processes paused at `point`, once `count` of them are."""
        found: dict[int, int] = {}

        def enough() -> bool:
            self.check_alive()
            for pid_file in self.faults.glob(f"{point}-*.pid"):
                content = pid_file.read_text()
                if content:
                    found[int(pid_file.stem.rsplit("-", 1)[1])] = int(content)
            return len(found) >= count

        wait_until(enough, f"{count} worker process(es) paused at {point}", timeout)
        return found

    def runs(self) -> list[tuple[int, int]]:
        """(pid, delivery id) of every task run so far, in order."""
        try:
            lines = (self.faults / "runs.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(int(pid), int(delivery)) for pid, delivery in (line.split() for line in lines)]

    def crashes(self, delivery_id: int) -> int:
        try:
            return len((self.faults / f"crash-{delivery_id}.log").read_text().split())
        except FileNotFoundError:
            return 0

    # ----------------------------------------------------------------- HTTP

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = self.client()
        return self._http

    def post_stripe(self, body: bytes) -> httpx.Response:
        signature = sign_stripe(body, STRIPE_SECRET, int(time.time()))
        return self.http.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
        )

    def deliver(self, bodies: Iterable[bytes], *, parallel: int = 1) -> list[int]:
        """POST every body, expecting 202; the delivery ids, in order."""

        def one(body: bytes) -> int:
            answer = self.post_stripe(body)
            assert answer.status_code == 202, answer.text
            delivery_id: int = answer.json()["delivery_id"]
            return delivery_id

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return list(pool.map(one, bodies))

    def register_payment(self, n: int, amount: int = 2000) -> int:
        """Order `order-<n>` with one Stripe payment `pi_fault_<n>`; the payment id."""
        self.http.post(
            "/api/orders", json={"reference": f"order-{n}", "total": amount, "currency": "usd"}
        ).raise_for_status()
        answer = self.http.post(
            "/api/payments",
            json={
                "order_reference": f"order-{n}",
                "provider": "stripe",
                "provider_reference": intent(n),
                "amount": amount,
                "currency": "usd",
            },
        )
        answer.raise_for_status()
        payment_id: int = answer.json()["id"]
        return payment_id

    def register_payments(self, count: int, *, parallel: int = 1) -> list[int]:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return list(pool.map(self.register_payment, range(count)))

    # ----------------------------------------------------------------- what users check

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conninfo = self.postgres.conninfo(self.database_url.rsplit("/", 1)[1])
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def wait_idle(self, timeout: float = 60) -> None:
        """The broker holds no task message any more: queued, scheduled or unacknowledged."""
        self.wait_for("the broker to be idle", lambda: self.broker_messages() == (0, 0), timeout)

    def count_outcomes(self) -> int:
        return self.count(outcomes)

    def assert_every_delivery_has_one_outcome(self) -> None:
        missing = self.query(
            "SELECT d.id, count(o.id) FROM deliveries d LEFT JOIN outcomes o"
            " ON o.delivery_id = d.id GROUP BY d.id HAVING count(o.id) <> 1"
        )
        assert missing == [], f"deliveries without exactly one outcome: {missing}"

    def assert_confirmed_once(self, payment_ids: Iterable[int], amount: int = 2000) -> None:
        for payment_id in payment_ids:
            payment = self.http.get(f"/api/payments/{payment_id}").json()
            assert payment["state"] == "confirmed", payment
            applied = [o for o in payment["outcomes"] if o["kind"] == "applied"]
            assert len(applied) == 1, payment
            order = self.query(
                "SELECT paid_amount FROM orders o JOIN payments p ON p.order_id = o.id"
                " WHERE p.id = %s",
                payment_id,
            )
            assert order == [(amount,)], f"payment {payment_id}: order paid {order}"

    def outcome_of(self, delivery_id: int) -> dict[str, Any] | None:
        outcome: dict[str, Any] | None = self.http.get(f"/api/deliveries/{delivery_id}").json()[
            "outcome"
        ]
        return outcome


def intent(n: int) -> str:
    return f"pi_fault_{n}"


def stripe_event(fixture: str, event_id: str, payment: int) -> bytes:
    """A real Stripe event from tests/fixtures, for the PaymentIntent of payment `n`."""
    event = fixture_json(f"stripe/events/{fixture}.json")
    event["id"] = event_id
    obj = event["data"]["object"]
    if obj["object"] == "payment_intent":
        obj["id"] = intent(payment)
    else:
        obj["payment_intent"] = intent(payment)
    return json.dumps(event).encode()


def succeeded(n: int, event: str = "") -> bytes:
    return stripe_event("payment_intent.succeeded", f"evt_fault_pi_{n}{event}", n)


def charge_succeeded(n: int) -> bytes:
    return stripe_event("charge.succeeded", f"evt_fault_ch_{n}", n)


def new_stack(
    tmp_path: Path, postgres: PostgresServer, database: str, template: str, broker: Broker
) -> FaultStack:
    """Database and broker ready; no payhook process started yet. The broker is a private
    Redis, or on RabbitMQ a vhost named after the database."""
    database_url = postgres.fresh_database(database, template=template)
    server, vhost = None, None
    if broker == "amqp":
        vhost = scoped(database)
        broker_url = fresh_amqp(vhost)
    else:
        server = RedisServer(tmp_path / "redis")
        server.start()
        broker_url = server.url
    faults = tmp_path / "faults"
    faults.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PAYHOOK_", "FAULTS_"))},
        "PYTHONPATH": str(REPO),
        "PAYHOOK_DATA_DIR": str(tmp_path / "data"),
        "PAYHOOK_DATABASE_URL": database_url,
        "PAYHOOK_BROKER_URL": broker_url,
        "PAYHOOK_API_TOKEN": API_TOKEN,
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
        "PAYHOOK_STANDARD_WEBHOOK_SECRETS": f"shop={SHOP_SECRET}",
        "PAYHOOK_LOG_FORMAT": "console",
        "FAULTS_DIR": str(faults),
        **FAST_SETTINGS,
    }
    return FaultStack(
        database_url,
        env,
        tmp_path,
        broker=broker,
        redis_server=server,
        vhost=vhost,
        postgres=postgres,
        faults=faults,
    )


def hold_row_lock(conninfo: str, sql: str, *params: Any) -> psycopg.Connection[Any]:
    """A connection holding `sql` (a SELECT … FOR UPDATE) in an open transaction."""
    conn = psycopg.connect(conninfo, connect_timeout=5)
    conn.execute(sql, params)
    return conn


def outcome_lines(log: str) -> list[str]:
    """The worker's line per finished task run ("outcome applied", …), in either log format."""
    return [line for line in log.splitlines() if "payhook.tasks" in line and "outcome " in line]
