"""The Celery task itself, run by Celery (eagerly) on the embedded default's SQLite."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_retry
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from domain.providers import standard
from tasks import shims
from tasks.migrate import upgrade
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage import queries
from tasks.storage.tables import deliveries
from tasks.storage.uow import UnitOfWork
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.taskqueue.app import create_app

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessRuntime]:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    # A small budget: were a permanent error retried, the test would see it within a few tries.
    runtime.policy = dataclasses.replace(runtime.policy, max_task_retries=3)
    monkeypatch.setattr(shims, "_factory", None)  # restored after the test
    monkeypatch.setattr(shims, "_runtime", None)
    shims.install(lambda: runtime)
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def retries() -> Iterator[list[Any]]:
    """Every retry Celery reports while the test runs."""
    seen: list[Any] = []

    def heard(**details: Any) -> None:
        seen.append(details.get("reason"))

    task_retry.connect(heard, weak=False)
    yield seen
    task_retry.disconnect(heard)


def stored(runtime: ProcessRuntime) -> int:
    data = {"payment_reference": "pay_1", "amount": 1500, "currency": "EUR"}
    body = json.dumps({"type": "payment.succeeded", "data": data}).encode()
    return store_delivery(
        UnitOfWork(runtime.engine),
        standard.parse("shop", "msg_1", body),
        headers="{}",
        body=body,
        received_at=NOW,
    )


def test_a_permanent_error_is_recorded_dead_on_the_first_attempt_and_never_retried(
    runtime: ProcessRuntime, retries: list[Any]
) -> None:
    delivery_id = stored(runtime)
    # A programming error, not a transient one: a table the lookup needs is missing (recording
    # the failure needs it not).
    with runtime.engine.begin() as conn:
        conn.execute(text("DROP TABLE payment_aliases"))

    result = shims.process_delivery_task.apply(args=[delivery_id])

    assert result.successful()
    assert result.get()["kind"] == "dead"
    assert result.get()["reason"] == "processing_error"
    assert retries == []
    with runtime.engine.connect() as conn:
        view = queries.delivery(conn, delivery_id)
    assert view is not None
    assert (view["status"], view["outcome"]["kind"], view["outcome"]["reason"]) == (
        "processed",
        "dead",
        "processing_error",
    )
    assert view["attempts"] == 1


class LockNotAvailable(Exception):
    """What psycopg raises when lock_timeout expires (SQLSTATE 55P03)."""

    sqlstate = "55P03"


def test_a_transient_error_is_retried_up_to_the_budget_then_recorded_dead(
    runtime: ProcessRuntime, retries: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery_id = stored(runtime)
    attempts: list[int] = []

    def lock_timeout(*_args: Any) -> Any:
        attempts.append(1)
        raise OperationalError("SELECT … FOR UPDATE", None, LockNotAvailable("lock timeout"))

    # A row lock that is never released: every attempt times out.
    monkeypatch.setattr(shims, "process_delivery", lock_timeout)

    result = shims.process_delivery_task.apply(args=[delivery_id])

    assert (result.get()["kind"], result.get()["reason"]) == ("dead", "retry_budget_exhausted")
    assert len(retries) == runtime.policy.max_task_retries == 3
    assert len(attempts) == 1 + 3


def test_a_first_delivery_is_not_counted_as_a_redelivery(runtime: ProcessRuntime) -> None:
    register(runtime)
    delivery_id = stored(runtime)

    assert shims.process_delivery_task.apply(args=[delivery_id]).get()["kind"] == "applied"

    # The count that records a delivery dead/worker_lost once it passes the budget.
    with runtime.engine.connect() as conn:
        counted = conn.execute(
            select(deliveries.c.redeliveries).where(deliveries.c.id == delivery_id)
        ).scalar_one()
    assert counted == 0


def register(runtime: ProcessRuntime) -> None:
    uow = UnitOfWork(runtime.engine)
    create_order(uow, reference="order-1", total=1500, currency="EUR", now=NOW)
    create_payment(
        UnitOfWork(runtime.engine),
        order_reference="order-1",
        provider="shop",
        provider_reference="pay_1",
        amount=1500,
        currency="EUR",
        now=NOW,
    )
