"""Metrics: the receiver's /metrics after deliveries, the worker's task observer, the queue
depth read from Redis, and the example alert rules naming only metrics that exist."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis
import yaml
from celery.exceptions import Retry
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from domain.providers import stripe
from tasks import shims
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment, store_delivery
from tasks.shims import PROCESS_DELIVERY, SWEEP
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.unit.common import NOW
from worker import metrics
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.standard import sign_standard
from worker.signing.stripe import sign_stripe
from worker.taskqueue.app import create_app
from worker.taskqueue.metrics import TaskObserver
from worker.taskqueue.metrics_server import (
    QUEUE_DEPTH,
    MetricsSetupError,
    OutboxBacklog,
    QueueDepth,
    multiprocess_dir,
)
from worker.web.app import create_http_app

ROOT = Path(__file__).resolve().parents[2]
STRIPE_SECRET = "whsec_metrics_unit_test"
SHOP_SECRET = "whsec_" + base64.b64encode(b"metrics-unit-test-shop-secret").decode()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def confirmation(intent: str, event_id: str) -> bytes:
    event = fixture_json("stripe/events/payment_intent.succeeded.json")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent
    return json.dumps(event).encode()


def task(name: str, task_id: str = "task-1") -> Any:
    return SimpleNamespace(name=name, request=SimpleNamespace(id=task_id))


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    settings = Settings(
        data_dir=tmp_path,
        stripe_webhook_secrets=STRIPE_SECRET,
        standard_webhook_secrets=f"shop={SHOP_SECRET}",
    )
    upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    monkeypatch.setattr(runtime, "publish", lambda _delivery_id: None)  # no broker here
    monkeypatch.setattr(runtime, "now", lambda: NOW)
    return TestClient(create_http_app(runtime))


def stored_confirmation(engine: Engine, intent: str) -> int:
    """A registered payment and a stored confirmation of it, not processed yet."""
    create_order(UnitOfWork(engine), reference=f"o-{intent}", total=2000, currency="USD", now=NOW)
    create_payment(
        UnitOfWork(engine),
        order_reference=f"o-{intent}",
        provider="stripe",
        provider_reference=intent,
        amount=2000,
        currency="USD",
        now=NOW,
    )
    body = confirmation(intent, f"evt_{intent}")
    return store_delivery(
        UnitOfWork(engine), stripe.parse(body), headers="{}", body=body, received_at=NOW
    )


def test_receiver_metrics_after_deliveries_name_routes_answers_and_signature_failures(
    receiver: TestClient,
) -> None:
    failures = {
        p: sample("payhook_signature_failures_total", provider=p) for p in ("stripe", "shop")
    }
    accepted = sample(
        "payhook_webhook_request_duration_seconds_count", route="/webhooks/stripe", status="202"
    )
    body = confirmation("pi_metrics_1", "evt_metrics_1")
    signed = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET, int(NOW.timestamp()))}
    forged = {"Stripe-Signature": sign_stripe(body, "whsec_not_ours", int(NOW.timestamp()))}
    shop_body = b'{"type": "payment.succeeded", "data": {}}'
    shop_forged = sign_standard(shop_body, "msg_1", "whsec_" + "A" * 32, int(NOW.timestamp()))

    assert receiver.post("/webhooks/stripe", content=body, headers=signed).status_code == 202
    assert receiver.post("/webhooks/stripe", content=body, headers=forged).status_code == 401
    assert receiver.post("/webhooks/stripe", content=body).status_code == 401
    shop = receiver.post("/webhooks/standard/shop", content=shop_body, headers=shop_forged)
    assert shop.status_code == 401
    for made_up in ("made-up-1", "made-up-2"):
        assert receiver.post(f"/webhooks/standard/{made_up}", content=b"{}").status_code == 404

    exposed = receiver.get("/metrics").text
    for name in (
        "payhook_deliveries_received_total",
        "payhook_signature_failures_total",
        "payhook_webhook_request_duration_seconds_bucket",
        "payhook_webhook_request_duration_seconds_count",
    ):
        assert f"\n{name}{{" in exposed, name
    assert 'route="/webhooks/standard/{source}",status="404"' in exposed
    assert "made-up" not in exposed  # labels come from route templates, not from paths
    assert sample("payhook_signature_failures_total", provider="stripe") == failures["stripe"] + 2
    assert sample("payhook_signature_failures_total", provider="shop") == failures["shop"] + 1
    assert (
        sample(
            "payhook_webhook_request_duration_seconds_count",
            route="/webhooks/stripe",
            status="202",
        )
        == accepted + 1
    )


def test_an_outcome_is_counted_once_with_its_lag_even_when_the_broker_redelivers(
    engine: Engine,
) -> None:
    delivery_id = stored_confirmation(engine, "pi_observed")
    applied = sample("payhook_outcomes_total", kind="applied", reason="")
    lags = sample("payhook_outcome_lag_seconds_count", provider="stripe")
    lag_sum = sample("payhook_outcome_lag_seconds_sum", provider="stripe")
    runs = sample("payhook_task_duration_seconds_count", task=PROCESS_DELIVERY)

    first_run = NOW + timedelta(seconds=2)
    observer = TaskObserver()
    observer.started("task-1", task(PROCESS_DELIVERY))
    result = process_delivery(delivery_id, UnitOfWork(engine), first_run, RetryPolicy())
    observer.succeeded(task(PROCESS_DELIVERY), result.as_dict())
    observer.finished("task-1", task(PROCESS_DELIVERY))

    assert sample("payhook_outcomes_total", kind="applied", reason="") == applied + 1
    assert sample("payhook_outcome_lag_seconds_count", provider="stripe") == lags + 1
    assert sample("payhook_outcome_lag_seconds_sum", provider="stripe") == lag_sum + 2.0

    # The broker delivers the same task again later: the recorded outcome is only returned.
    redelivery = NOW + timedelta(seconds=30)
    observer = TaskObserver()
    observer.started("task-2", task(PROCESS_DELIVERY, "task-2"))
    again = process_delivery(delivery_id, UnitOfWork(engine), redelivery, RetryPolicy())
    observer.succeeded(task(PROCESS_DELIVERY, "task-2"), again.as_dict())
    observer.finished("task-2", task(PROCESS_DELIVERY, "task-2"))

    assert sample("payhook_outcomes_total", kind="applied", reason="") == applied + 1
    assert sample("payhook_outcome_lag_seconds_count", provider="stripe") == lags + 1
    assert sample("payhook_task_duration_seconds_count", task=PROCESS_DELIVERY) == runs + 2


def test_a_deferral_is_counted_by_reason_and_never_as_an_outcome(engine: Engine) -> None:
    before = sample("payhook_deferrals_total", reason="no_payment")
    outcomes_before = sample("payhook_outcomes_total", kind="deferred", reason="no_payment")
    observer = TaskObserver()
    observer.succeeded(
        task(PROCESS_DELIVERY), {"kind": "deferred", "reason": "no_payment", "delivery_id": 1}
    )
    assert sample("payhook_deferrals_total", reason="no_payment") == before + 1
    assert sample("payhook_outcomes_total", kind="deferred", reason="no_payment") == (
        outcomes_before
    )


def test_retries_failures_and_dead_deliveries_are_counted_by_cause(engine: Engine) -> None:
    before = {
        "deferred": sample("payhook_task_retries_total", task=PROCESS_DELIVERY, cause="deferred"),
        "transient": sample(
            "payhook_task_retries_total", task=PROCESS_DELIVERY, cause="OperationalError"
        ),
        "dead": sample("payhook_dead_deliveries_total", reason="processing_error"),
        "swept": sample("payhook_dead_deliveries_total", reason="retry_budget_exhausted"),
        "failed": sample("payhook_task_failures_total", task=PROCESS_DELIVERY),
    }
    observer = TaskObserver()
    observer.retried(task(PROCESS_DELIVERY), reason=Retry())
    lost = OperationalError("SELECT 1", {}, Exception("connection lost"))
    observer.retried(task(PROCESS_DELIVERY), reason=Retry(exc=lost))
    observer.succeeded(
        task(PROCESS_DELIVERY),
        {"kind": "dead", "reason": "processing_error", "delivery_id": 404},
    )
    observer.succeeded(task(SWEEP), {"republished": 3, "dead": 2})
    observer.failed(task(PROCESS_DELIVERY))
    observer.retried(task("celery.backend_cleanup"), reason=Retry())  # not ours: not counted

    after = {
        "deferred": sample("payhook_task_retries_total", task=PROCESS_DELIVERY, cause="deferred"),
        "transient": sample(
            "payhook_task_retries_total", task=PROCESS_DELIVERY, cause="OperationalError"
        ),
        "dead": sample("payhook_dead_deliveries_total", reason="processing_error"),
        "swept": sample("payhook_dead_deliveries_total", reason="retry_budget_exhausted"),
        "failed": sample("payhook_task_failures_total", task=PROCESS_DELIVERY),
    }
    assert {k: after[k] - before[k] for k in before} == {
        "deferred": 1,
        "transient": 1,
        "dead": 1,
        "swept": 2,
        "failed": 1,
    }
    exposed = generate_latest(REGISTRY).decode()
    for name in (
        "payhook_task_retries_total",
        "payhook_dead_deliveries_total",
        "payhook_task_failures_total",
        "payhook_outcomes_total",
    ):
        assert f"\n{name}{{" in exposed, name


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessRuntime]:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    monkeypatch.setattr(shims, "_factory", None)  # restored after the test
    monkeypatch.setattr(shims, "_runtime", None)
    shims.install(lambda: runtime)
    yield runtime
    runtime.engine.dispose()


def test_the_observer_hears_a_task_that_celery_runs(installed: ProcessRuntime) -> None:
    delivery_id = stored_confirmation(installed.engine, "pi_celery")
    applied = sample("payhook_outcomes_total", kind="applied", reason="")
    runs = sample("payhook_task_duration_seconds_count", task=PROCESS_DELIVERY)
    observer = TaskObserver()
    observer.connect()
    try:
        outcome = shims.process_delivery_task.apply(args=[delivery_id]).get()
    finally:
        observer.disconnect()
    assert outcome["kind"] == "applied"
    assert sample("payhook_outcomes_total", kind="applied", reason="") == applied + 1
    assert sample("payhook_task_duration_seconds_count", task=PROCESS_DELIVERY) == runs + 1


def test_queue_depth_counts_every_priority_list_of_the_queue() -> None:
    client = fakeredis.FakeRedis()
    client.rpush("payhook", "a", "b", "c")
    client.rpush("payhook\x06\x163", "d")
    client.rpush("other", "e")
    (family,) = QueueDepth(lambda: client, "payhook").collect()
    assert family.name == QUEUE_DEPTH
    assert [(s.labels, s.value) for s in family.samples] == [({"queue": "payhook"}, 4)]


def test_queue_depth_is_left_out_when_redis_does_not_answer() -> None:
    def unreachable() -> redis.Redis:
        raise redis.ConnectionError("refused")

    assert list(QueueDepth(unreachable, "payhook").collect()) == []


def test_worker_metrics_refuse_to_start_without_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(MetricsSetupError, match="PROMETHEUS_MULTIPROC_DIR"):
        multiprocess_dir()
    # Set after prometheus-client was imported: too late, the values already live in memory.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(MetricsSetupError, match="before the worker starts"):
        multiprocess_dir()


def exposed_names() -> set[str]:
    """Every sample name payhook can expose, from the metric definitions themselves."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    families = [f for m in defined for f in m.describe()]
    families += list(QueueDepth(fakeredis.FakeRedis, "payhook").describe())
    families += list(OutboxBacklog("sqlite://").describe())
    for family in families:
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def test_every_alert_rule_parses_and_names_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = exposed_names()
    assert {"payhook_signature_failures_total", "payhook_queue_depth"} <= names
    used = set()
    for alert in alerts:
        assert re.fullmatch(r"Payhook[A-Za-z]+", alert["alert"])
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        used |= set(re.findall(r"\bpayhook_[a-z_]+", alert["expr"]))
    assert used, "no payhook metric in the alert rules"
    assert used <= names, f"alerts use metrics that do not exist: {sorted(used - names)}"
    # What the operators' issue asked to alert on.
    for name in (
        "payhook_signature_failures_total",
        "payhook_outcome_lag_seconds_bucket",
        "payhook_dead_deliveries_total",
        "payhook_queue_depth",
        "payhook_notifications_oldest_pending_seconds",
        "payhook_notification_sends_total",
    ):
        assert name in used, name
