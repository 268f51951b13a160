"""`payhook serve --workers N`: N server processes, each with a pool opened before its first
request, so that no request opens a PostgreSQL connection, however many arrive at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.integration.stack import STRIPE_SECRET, free_port, fresh_database, fresh_redis
from worker.signing.stripe import sign_stripe
from worker.tooling.bench.cpu import descendants

pytestmark = pytest.mark.integration

SERVER_PROCESSES = 2
POOL_SIZE = 3
CONCURRENT = 24  # far more requests at once than the pools hold connections
DELIVERIES = 96


def _sessions(conn: psycopg.Connection[tuple[int]]) -> int:
    """Sessions ever opened to this database; backends report them within a second."""
    time.sleep(1.2)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": f"evt_serve_{i}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": f"pi_serve_{i}",
                    "object": "payment_intent",
                    "amount": 2000,
                    "amount_received": 2000,
                    "currency": "usd",
                }
            },
        }
    ).encode()
    signature = sign_stripe(body, STRIPE_SECRET, int(time.time()))
    return body, {"Stripe-Signature": signature, "Content-Type": "application/json"}


def test_no_request_opens_a_database_connection_under_concurrent_load(tmp_path: Path) -> None:
    database = fresh_database("serve_pool")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")},
        "PAYHOOK_DATA_DIR": str(tmp_path / "data"),
        "PAYHOOK_DATABASE_URL": database,
        "PAYHOOK_BROKER_URL": fresh_redis(),
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
        "PAYHOOK_DB_POOL_SIZE": str(POOL_SIZE),
    }
    command = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)]
    command += ["--workers", str(SERVER_PROCESSES)]
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    libpq = make_url(database).set(drivername="postgresql").render_as_string(False)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert len(descendants(server.pid)) > SERVER_PROCESSES  # the supervisor and N servers
        with psycopg.connect(libpq, autocommit=True) as conn:
            before = _sessions(conn)
            with httpx.Client(base_url=base, timeout=30) as client:

                def post(i: int) -> int:
                    body, headers = _delivery(i)
                    return client.post(
                        "/webhooks/stripe", content=body, headers=headers
                    ).status_code

                with ThreadPoolExecutor(CONCURRENT) as pool:
                    answers = list(pool.map(post, range(DELIVERIES)))
            opened = _sessions(conn) - before
            stored = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        assert answers == [202] * DELIVERIES
        assert stored == (DELIVERIES,)
        assert opened == 0, f"{opened} connections opened by requests; log: {log}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
