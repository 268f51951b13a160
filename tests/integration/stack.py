"""A real payhook stack for tests: PostgreSQL, Redis or RabbitMQ, `payhook serve` and `payhook
worker`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import kombu
import psycopg
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from tasks.migrate import upgrade
from tasks.storage.tables import deliveries, outcomes
from tests.conftest import service_missing
from worker.tooling.processes import free_port
from worker.tooling.stack import Stack as ProcessStack
from worker.tooling.stack import payhook

DATABASE_URL = os.environ.get(
    "PAYHOOK_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_test"
)
REDIS_URL = os.environ.get("PAYHOOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Each stack gets a vhost of its own on this server (made with rabbitmqctl, so a local one).
AMQP_URL = os.environ.get("PAYHOOK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# PgBouncer in transaction mode in front of the test PostgreSQL (./dev starts one).
PGBOUNCER_URL = os.environ.get(
    "PAYHOOK_TEST_PGBOUNCER_URL", "postgresql+psycopg://postgres@127.0.0.1:6439/payhook_test"
)
STRIPE_SECRET = "whsec_integration_stripe"
SHOP_SECRET = "whsec_" + base64.b64encode(b"integration-shop-secret-bytes").decode()
API_TOKEN = "integration-api-token-0123456789abcdef"
# Several checkouts may run their tests at once against the same servers: each sets its own
# scope, which prefixes every database and vhost name the tests make.
SCOPE = os.environ.get("PAYHOOK_TEST_SCOPE", "")


def scoped(name: str) -> str:
    """`name` in this run's scope (PAYHOOK_TEST_SCOPE), so that parallel runs never share it."""
    if not SCOPE or name.startswith(f"{SCOPE}_"):
        return name
    return f"{SCOPE}_{name}"


def fresh_database(name: str, *, migrate: bool = True) -> str:
    """Drop and recreate database `name` on the test server; return its URL, migrated unless
    `migrate` is false (a deploy's own migrate command is to make the schema)."""
    name = scoped(name)
    url = make_url(DATABASE_URL)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        service_missing(f"PostgreSQL at {url.render_as_string(True)}")
    database = url.set(database=name).render_as_string(False)
    if migrate:
        upgrade(database)
    return database


def through_pgbouncer(database: str) -> str:
    """The URL of `database` through the tests' PgBouncer (transaction pooling)."""
    url = make_url(PGBOUNCER_URL).set(database=make_url(database).database)
    conninfo = url.set(drivername="postgresql").render_as_string(False)
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError:
        service_missing(f"PgBouncer at {url.render_as_string(True)}")
    return url.render_as_string(False)


def fresh_redis() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).flushdb()
    except redis.ConnectionError:
        service_missing(f"Redis at {REDIS_URL}")
    return REDIS_URL


def fresh_amqp(vhost: str) -> str:
    """A new, empty RabbitMQ vhost `vhost` (dropped first if it exists); return its URL."""
    vhost = scoped(vhost)
    try:
        with kombu.Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception:
        service_missing(f"RabbitMQ at {_without_password(AMQP_URL)}")
    if shutil.which("rabbitmqctl") is None:
        service_missing("rabbitmqctl (each RabbitMQ test makes a vhost of its own)")
    user = urlsplit(AMQP_URL).username or "guest"
    drop_amqp(vhost)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    parts = urlsplit(AMQP_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))


def drop_amqp(vhost: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", "delete_vhost", scoped(vhost)],
        capture_output=True,
        timeout=60,
        check=False,
    )


def rabbitmq_queues(vhost: str) -> dict[str, dict[str, Any]]:
    """The queues of `vhost` as RabbitMQ reports them: name -> type, arguments, messages."""
    listed = rabbitmqctl(
        "list_queues",
        "-p",
        scoped(vhost),
        "name",
        "type",
        "arguments",
        "messages",
        "--formatter",
        "json",
    )
    queues = {queue["name"]: queue for queue in json.loads(listed)}
    for queue in queues.values():  # listed as [name, type, value] triples
        queue["arguments"] = {name: value for name, _, value in queue["arguments"]}
    return queues


def rabbitmq_unacknowledged(vhost: str) -> int:
    """Messages delivered on the channels of `vhost` and not acknowledged yet. Asked of each
    channel, so exact now (a queue's own counts in list_queues lag by a few seconds)."""
    listed = rabbitmqctl("list_channels", "--no-table-headers", "vhost", "messages_unacknowledged")
    rows = [line.split("\t") for line in listed.splitlines()]
    return sum(int(count) for name, count in rows if name == scoped(vhost))


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, f"{netloc}:{parts.port or 5672}", parts.path, "", ""))


class Stack(ProcessStack):
    """The tooling's stack of processes, with what the tests read back from its database."""

    def __init__(self, database_url: str, env: dict[str, str], logs: Path, **kw: Any) -> None:
        super().__init__(env, logs, **kw)
        self.database_url = database_url

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    def count(self, table: Any, *where: Any) -> int:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
                )
        finally:
            engine.dispose()

    def outcome_counts(self) -> dict[str, int]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT kind || coalesce('/' || reason, ''), count(*)"
                        " FROM outcomes GROUP BY 1"
                    )
                )
                return {kind: int(n) for kind, n in rows}
        finally:
            engine.dispose()

    def wait_for_outcomes(self, expected: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(outcomes) >= expected:
                return
            self.check_alive()
            time.sleep(0.2)
        raise AssertionError(
            f"only {self.count(outcomes)} of {expected} outcomes after {timeout}s; "
            f"deliveries: {self.count(deliveries)}; logs in {self.logs}"
        )


Broker = Literal["redis", "amqp"]


@contextmanager
def running_stack(
    tmp_path: Path,
    *,
    worker_processes: int,
    name: str,
    broker: Broker = "redis",
    settings: dict[str, str] | None = None,
    pgbouncer: bool = False,
    database_settings: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """`settings`: more PAYHOOK_* variables for every process of the stack.
    `pgbouncer`: the receiver and the worker reach PostgreSQL through PgBouncer in
    transaction mode (the test's own queries go straight to PostgreSQL).
    `database_settings`: defaults set on the database (ALTER DATABASE … SET) before any
    process connects."""
    database = fresh_database(name)
    if database_settings:
        conninfo = make_url(database).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for setting, value in database_settings.items():
                conn.execute(f'ALTER DATABASE "{scoped(name)}" SET {setting} = {value}')
    served = through_pgbouncer(database) if pgbouncer else database
    broker_url = fresh_amqp(name) if broker == "amqp" else fresh_redis()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")},
        "PAYHOOK_DATA_DIR": str(tmp_path / "data"),
        "PAYHOOK_DATABASE_URL": served,
        "PAYHOOK_BROKER_URL": broker_url,
        "PAYHOOK_API_TOKEN": API_TOKEN,
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
        "PAYHOOK_STANDARD_WEBHOOK_SECRETS": f"shop={SHOP_SECRET}",
        **(settings or {}),
    }
    stack = Stack(database, env, tmp_path)
    try:
        stack.start_receiver()
        stack.start_worker(concurrency=worker_processes, node=name)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        if broker == "amqp":
            drop_amqp(name)


FLOWER_USER, FLOWER_PASSWORD = "operator", "integration-flower-password"


def start_flower(stack: Stack, *, worker: str, timeout: float = 60) -> str:
    """Start `payhook flower` (basic auth, loopback) on `stack`; return its base URL once it
    receives the events of worker `worker` (its node name before the "@")."""
    port = free_port()
    env = {**stack.env, "PAYHOOK_FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    stack.start("flower", payhook("flower", "--port", str(port), "--address", "127.0.0.1"), env)
    base_url = f"http://127.0.0.1:{port}"
    online = f'flower_worker_online{{worker="{worker}@'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            metrics = httpx.get(f"{base_url}/metrics", timeout=2).text
        except httpx.TransportError:
            metrics = ""
        # A heartbeat arrived: Flower is consuming the workers' events.
        if any(line.startswith(online) and line.endswith(" 1.0") for line in metrics.splitlines()):
            return base_url
        time.sleep(0.3)
    raise AssertionError(
        f"flower saw no heartbeat of {worker} in {timeout} s; logs in {stack.logs}"
    )
