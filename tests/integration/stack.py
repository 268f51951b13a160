"""A real payhook stack for tests: PostgreSQL, Redis, `payhook serve` and `payhook worker`."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from tasks.migrate import upgrade
from tasks.storage.tables import deliveries, outcomes
from tests.conftest import service_missing

DATABASE_URL = os.environ.get(
    "PAYHOOK_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_test"
)
REDIS_URL = os.environ.get("PAYHOOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
STRIPE_SECRET = "whsec_integration_stripe"
SHOP_SECRET = "whsec_" + base64.b64encode(b"integration-shop-secret-bytes").decode()
API_TOKEN = "integration-token"


def fresh_database(name: str) -> str:
    """Drop and recreate database `name` on the test server; return its URL, migrated."""
    url = make_url(DATABASE_URL)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        service_missing(f"PostgreSQL at {url.render_as_string(True)}")
    database = url.set(database=name).render_as_string(False)
    upgrade(database)
    return database


def fresh_redis() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).flushdb()
    except redis.ConnectionError:
        service_missing(f"Redis at {REDIS_URL}")
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    database_url: str
    env: dict[str, str]
    base_url: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

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

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(
                    f"{process.args} exited {process.returncode}; logs in {self.logs}"
                )


def payhook(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


@contextmanager
def running_stack(tmp_path: Path, *, worker_processes: int, name: str) -> Iterator[Stack]:
    database = fresh_database(name)
    broker = fresh_redis()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")},
        "PAYHOOK_DATA_DIR": str(tmp_path / "data"),
        "PAYHOOK_DATABASE_URL": database,
        "PAYHOOK_BROKER_URL": broker,
        "PAYHOOK_API_TOKEN": API_TOKEN,
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
        "PAYHOOK_STANDARD_WEBHOOK_SECRETS": f"shop={SHOP_SECRET}",
    }
    stack = Stack(database, env, f"http://127.0.0.1:{port}", tmp_path)
    try:
        stack.processes.append(
            _start(payhook("serve", "--port", str(port)), env, tmp_path / "receiver.log")
        )
        stack.processes.append(
            _start(
                payhook(
                    "worker",
                    "--concurrency",
                    str(worker_processes),
                    "--pool",
                    "prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"{name}@%h",
                ),
                env,
                tmp_path / "worker.log",
            )
        )
        _wait_ready(stack)
        yield stack
    finally:
        for process in stack.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in stack.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    worker_log = stack.logs / "worker.log"
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            ready = httpx.get(f"{stack.base_url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            ready = False
        if ready and worker_log.exists() and b"ready." in worker_log.read_bytes():
            return
        time.sleep(0.2)
    raise AssertionError(f"the stack did not become ready in 60 s; logs in {stack.logs}")
