"""`payhook worker --metrics-port` on PostgreSQL and Redis: the parent serves what every prefork
child observed (prometheus-client multiprocess mode), and the queue depth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.providers import stripe
from tasks.registering import create_order, create_payment, store_delivery
from tasks.shims import PROCESS_DELIVERY
from tasks.storage.engine import make_engine
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.integration.stack import free_port, fresh_database, fresh_redis, payhook
from worker.settings import Settings
from worker.taskqueue.app import create_app

pytestmark = pytest.mark.integration

NAME = "payhook_it_metrics"
COPIES = 12


def confirmation(event_id: str, intent: str) -> bytes:
    event = fixture_json("stripe/events/payment_intent.succeeded.json")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent
    return json.dumps(event).encode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_worker_metrics_add_up_what_every_prefork_child_observed(tmp_path: Path) -> None:
    database, broker = fresh_database(NAME), fresh_redis()
    settings = Settings(data_dir=tmp_path / "data", database_url=database, broker_url=broker)
    engine = make_engine(database)
    now = datetime.now(UTC)  # the worker's clock measures the lag from here
    create_order(UnitOfWork(engine), reference="order-m", total=2000, currency="USD", now=now)
    create_payment(
        UnitOfWork(engine),
        order_reference="order-m",
        provider="stripe",
        provider_reference="pi_metrics",
        amount=2000,
        currency="USD",
        now=now,
    )
    body = confirmation("evt_metrics", "pi_metrics")
    early = confirmation("evt_metrics_early", "pi_not_registered")
    ids = [
        store_delivery(UnitOfWork(engine), stripe.parse(b), headers="{}", body=b, received_at=now)
        for b in [body] * COPIES + [early]
    ]

    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    stale = multiproc / "counter_999999.db"
    stale.write_bytes(b"left by an earlier run")
    port = free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PAYHOOK_") and k != "PROMETHEUS_MULTIPROC_DIR"
        },
        "PAYHOOK_DATA_DIR": str(tmp_path / "data"),
        "PAYHOOK_DATABASE_URL": database,
        "PAYHOOK_BROKER_URL": broker,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    command = payhook(
        "worker",
        "--concurrency",
        "2",
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"{NAME}@%h",
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    app = create_app(settings)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            assert worker.poll() is None, f"the worker exited; see {log}"
            assert time.monotonic() < deadline, f"the worker was not ready in 60 s; see {log}"
            time.sleep(0.2)
        assert not stale.exists()  # an earlier run's values are not summed in
        assert scrape(url)[("payhook_queue_depth", (("queue", "payhook"),))] == 0

        for delivery_id in ids:
            app.send_task(PROCESS_DELIVERY, args=[delivery_id])

        deadline = time.monotonic() + 60
        samples = scrape(url)
        while total(samples, "payhook_outcomes_total") < COPIES or not total(
            samples, "payhook_deferrals_total"
        ):
            assert worker.poll() is None, f"the worker exited; see {log}"
            assert time.monotonic() < deadline, f"metrics after 60 s: {samples}; see {log}"
            time.sleep(0.3)
            samples = scrape(url)

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        assert value("payhook_outcomes_total", kind="applied", reason="") == 1
        same = value("payhook_outcomes_total", kind="acknowledged_duplicate", reason="same_event")
        assert same == COPIES - 1
        assert value("payhook_outcome_lag_seconds_count", provider="stripe") == COPIES
        assert value("payhook_task_duration_seconds_count", task=PROCESS_DELIVERY) >= COPIES + 1
        assert value("payhook_deferrals_total", reason="no_payment") >= 1
        assert ("payhook_queue_depth", (("queue", "payhook"),)) in samples
        # The children wrote the values: the parent (which runs no task) only sums their files.
        writers = {path.stem.rpartition("_")[2] for path in multiproc.glob("*.db")}
        assert str(worker.pid) not in writers
        assert writers
    finally:
        app.close()
        engine.dispose()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
