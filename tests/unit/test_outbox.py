"""The outbox on our real SQL (SQLite in tmp_path): written with the change, relayed in order."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from domain.providers import standard
from tasks.confirming import ConfirmStatus, confirm_payment
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment, store_delivery
from tasks.relaying import Answer, RelayPolicy, relay
from tasks.storage import outbox
from tasks.storage.engine import make_engine
from tasks.storage.tables import notification_sends
from tasks.storage.uow import UnitOfWork
from worker.cli import main
from worker.taskqueue.metrics_server import OutboxBacklog

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOOK = "http://host.test/hook"
POLICY = RelayPolicy(retry_window=timedelta(hours=1), backoff_base_s=1, backoff_cap_s=60)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def register(engine: Engine, order: str, reference: str, amount: int = 1500) -> int:
    create_order(UnitOfWork(engine), reference=order, total=amount, currency="EUR", now=NOW)
    return create_payment(
        UnitOfWork(engine),
        order_reference=order,
        provider="shop",
        provider_reference=reference,
        amount=amount,
        currency="EUR",
        now=NOW,
    )


def deliver(engine: Engine, webhook_id: str, event_type: str, reference: str, **data: Any) -> int:
    fields = {"payment_reference": reference, "amount": 1500, "currency": "EUR", **data}
    body = json.dumps({"type": event_type, "data": fields}).encode()
    delivery_id = store_delivery(
        UnitOfWork(engine),
        standard.parse("shop", webhook_id, body),
        headers="{}",
        body=body,
        received_at=NOW,
    )
    process_delivery(delivery_id, UnitOfWork(engine), NOW, RetryPolicy())
    return delivery_id


def feed(engine: Engine, after: int = 0, limit: int = 1000) -> list[Any]:
    with engine.connect() as conn:
        return outbox.feed(conn, after=after, limit=limit)


def test_an_applied_delivery_writes_its_notifications_and_a_duplicate_writes_none(
    engine: Engine,
) -> None:
    payment_id = register(engine, "order-1", "pay_1")
    first = deliver(engine, "msg_1", "payment.succeeded", "pay_1")
    deliver(engine, "msg_1", "payment.succeeded", "pay_1")  # the same event again
    deliver(engine, "msg_2", "payment.succeeded", "pay_1")  # another event, already in state
    deliver(engine, "msg_3", "payment.failed", "pay_1")  # stale
    deliver(engine, "msg_4", "payment.mystery", "pay_1")  # unsupported
    rows = feed(engine)
    assert [(row.type, row.order_sequence) for row in rows] == [
        ("payment.confirmed", 1),
        ("order.paid", 2),
    ]
    data = json.loads(rows[0].data)
    assert data["delivery_id"] == first
    assert data["payment_id"] == payment_id
    assert data["transition"] == "pending->confirmed"


def test_sequences_count_per_order_and_a_refund_is_told_with_its_amount(engine: Engine) -> None:
    register(engine, "order-1", "pay_1")
    register(engine, "order-2", "pay_2")
    deliver(engine, "a1", "payment.succeeded", "pay_1")
    deliver(engine, "b1", "payment.succeeded", "pay_2")
    deliver(engine, "a2", "payment.refunded", "pay_1", amount=500, refund_reference="re_1")
    rows = feed(engine)
    told = [(row.order_id, row.type, row.order_sequence) for row in rows]
    one, two = rows[0].order_id, rows[2].order_id
    assert told == [
        (one, "payment.confirmed", 1),
        (one, "order.paid", 2),
        (two, "payment.confirmed", 1),
        (two, "order.paid", 2),
        (one, "payment.refunded", 3),
        (one, "order.unpaid", 4),
    ]
    assert json.loads(rows[4].data)["amount"] == 500


def test_a_manual_confirmation_is_told_once_without_a_delivery(engine: Engine) -> None:
    payment_id = register(engine, "order-1", "pay_1")
    assert confirm_payment(payment_id, UnitOfWork(engine), NOW).status is ConfirmStatus.CONFIRMED
    again = confirm_payment(payment_id, UnitOfWork(engine), NOW)
    assert again.status is ConfirmStatus.ALREADY_CONFIRMED
    rows = feed(engine)
    assert [row.type for row in rows] == ["payment.confirmed", "order.paid"]
    assert json.loads(rows[0].data)["delivery_id"] is None


def test_the_feed_pages_by_id(engine: Engine) -> None:
    for n in range(3):
        register(engine, f"order-{n}", f"pay_{n}")
        deliver(engine, f"m{n}", "payment.succeeded", f"pay_{n}")
    everything = [row.id for row in feed(engine)]
    assert len(everything) == 6
    page = [row.id for row in feed(engine, after=everything[1], limit=2)]
    assert page == everything[2:4]


class Endpoint:
    """A host endpoint that answers `status` (or fails to connect) and keeps what it got."""

    def __init__(self) -> None:
        self.status: int | None = 200
        self.received: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, message_id: str, body: bytes) -> Answer:
        assert url == HOOK
        if self.status is None:
            return Answer(None, "ConnectError: refused")
        if 200 <= self.status < 300:
            self.received.append((message_id, json.loads(body)))
        return Answer(self.status)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def run_relay(engine: Engine, endpoint: Endpoint, clock: Clock) -> dict[str, int]:
    rounds = iter(range(1000))
    report = relay(
        lambda: UnitOfWork(engine),
        clock,
        [HOOK],
        endpoint.post,
        POLICY,
        elapsed=lambda: float(next(rounds)) / 100,
    )
    return report.as_dict()


def sequences(endpoint: Endpoint) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for _, message in endpoint.received:
        data = message["data"]
        got.setdefault(data["order_reference"], []).append(data["order_sequence"])
    return got


def test_the_relay_sends_each_notification_once_as_the_feed_lists_it(engine: Engine) -> None:
    register(engine, "order-1", "pay_1")
    deliver(engine, "m1", "payment.succeeded", "pay_1")
    endpoint, clock = Endpoint(), Clock()
    assert run_relay(engine, endpoint, clock)["delivered"] == 2
    assert run_relay(engine, endpoint, clock)["delivered"] == 0
    listed = {str(row.id): row.type for row in feed(engine)}
    assert {message_id: body["type"] for message_id, body in endpoint.received} == listed
    body = endpoint.received[0][1]
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"] == "2024-05-01T12:00:00.000000Z"


def test_an_endpoint_that_refuses_for_a_while_gets_everything_after_in_sequence(
    engine: Engine,
) -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.status = 503
    for n in range(3):
        register(engine, f"order-{n}", f"pay_{n}")
        deliver(engine, f"c{n}", "payment.succeeded", f"pay_{n}")
        run_relay(engine, endpoint, clock)
        deliver(engine, f"r{n}", "payment.refunded", f"pay_{n}", refund_reference=f"re_{n}")
        run_relay(engine, endpoint, clock)
        clock.now += timedelta(seconds=5)
    assert endpoint.received == []
    endpoint.status = None  # now it cannot even be reached
    clock.now += timedelta(minutes=2)
    run_relay(engine, endpoint, clock)
    endpoint.status = 200
    for _ in range(20):
        clock.now += timedelta(minutes=2)
        run_relay(engine, endpoint, clock)
    assert sequences(endpoint) == {f"order-{n}": [1, 2, 3, 4] for n in range(3)}


def test_a_later_notification_waits_while_an_earlier_one_is_retried(engine: Engine) -> None:
    register(engine, "order-1", "pay_1")
    deliver(engine, "c", "payment.succeeded", "pay_1")
    endpoint, clock = Endpoint(), Clock()
    endpoint.status = 500
    run_relay(engine, endpoint, clock)
    with engine.connect() as conn:
        attempts = sorted(row.attempts for row in conn.execute(select(notification_sends)))
    # The confirmation was tried; the order.paid behind it was not, though it was due too.
    assert attempts == [0, 1]


def test_a_relay_that_dies_while_posting_is_resent_with_the_same_id_after_its_lease(
    engine: Engine,
) -> None:
    register(engine, "order-1", "pay_1")
    deliver(engine, "c", "payment.succeeded", "pay_1")
    clock = Clock()

    def dies(url: str, message_id: str, body: bytes) -> Answer:
        died.append(message_id)
        raise SystemExit("killed while posting")

    died: list[str] = []
    with pytest.raises(SystemExit):
        relay(lambda: UnitOfWork(engine), clock, [HOOK], dies, POLICY, elapsed=lambda: 0.0)
    endpoint = Endpoint()
    assert run_relay(engine, endpoint, clock)["delivered"] == 0  # still leased
    clock.now += POLICY.lease
    run_relay(engine, endpoint, clock)
    assert [message_id for message_id, _ in endpoint.received][:1] == died


def test_past_its_retry_window_a_send_fails_and_an_operator_can_resend_it(
    engine: Engine,
) -> None:
    register(engine, "order-1", "pay_1")
    deliver(engine, "c", "payment.succeeded", "pay_1")
    endpoint, clock = Endpoint(), Clock()
    endpoint.status = 410
    failed = 0
    for _ in range(200):
        failed += run_relay(engine, endpoint, clock)["failed"]
        clock.now += timedelta(minutes=1)
    assert failed == 2  # both, once the first gave up and let the second through
    endpoint.status = 200
    assert run_relay(engine, endpoint, clock)["delivered"] == 0
    with UnitOfWork(engine) as uow:
        resent = [uow.sends.resend_failed(n, clock.now) for n in uow.sends.failed_notifications(10)]
        uow.commit()
    assert resent == [1, 1]
    assert run_relay(engine, endpoint, clock)["delivered"] == 2
    assert sequences(endpoint) == {"order-1": [1, 2]}


def test_the_backlog_gauges_count_what_waits_per_endpoint_until_it_is_delivered(
    engine: Engine, tmp_path: Path
) -> None:
    register(engine, "order-1", "pay_1")
    deliver(engine, "c", "payment.succeeded", "pay_1")
    endpoint, clock = Endpoint(), Clock()
    endpoint.status = 503
    run_relay(engine, endpoint, clock)  # the endpoint is known from its first relay run
    register(engine, "order-2", "pay_2")
    deliver(engine, "d", "payment.succeeded", "pay_2")  # not even materialized yet

    def gauges() -> dict[str, float]:
        collected = OutboxBacklog(f"sqlite:///{tmp_path}/t.db").collect()
        return {
            family.name: sample.value
            for family in collected
            for sample in family.samples
            if sample.labels == {"endpoint": HOOK}
        }

    waiting = gauges()
    assert waiting["payhook_notifications_pending"] == 4
    age = (datetime.now(UTC) - NOW).total_seconds()
    assert waiting["payhook_notifications_oldest_pending_seconds"] == pytest.approx(age, abs=60)
    endpoint.status = 200
    for _ in range(10):
        clock.now += timedelta(minutes=5)
        run_relay(engine, endpoint, clock)
    assert gauges() == {
        "payhook_notifications_pending": 0,
        "payhook_notifications_oldest_pending_seconds": 0,
    }


@pytest.fixture
def operator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Engine:
    """The `payhook` command on the test's database, with one notification endpoint."""
    for name in list(os.environ):
        if name.startswith("PAYHOOK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAYHOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", f"sqlite:///{tmp_path}/t.db")
    monkeypatch.setenv("PAYHOOK_NOTIFY_URL", HOOK)
    monkeypatch.setenv("PAYHOOK_NOTIFY_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    return engine


def test_payhook_events_lists_each_endpoints_status_and_resends_the_failed(
    operator_env: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = operator_env
    register(engine, "order-1", "pay_1")
    deliver(engine, "c", "payment.succeeded", "pay_1")
    endpoint, clock = Endpoint(), Clock()
    endpoint.status = 410
    for _ in range(70):
        run_relay(engine, endpoint, clock)
        clock.now += timedelta(minutes=1)
    assert main(["events", "--status", "failed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["type"] for row in listed] == ["order.paid", "payment.confirmed"]  # newest first
    assert {send["status"] for row in listed for send in row["sends"]} == {"failed"}
    assert all(send["attempts"] >= 1 and send["last_status"] == 410 for send in listed[0]["sends"])

    assert main(["events", "resend", "--failed"]) == 0
    assert "2 sends of 2 notifications are due again" in capsys.readouterr().out
    endpoint.status = 200
    clock.now = datetime.now(UTC) + timedelta(seconds=1)  # the command resent at the real time
    assert run_relay(engine, endpoint, clock)["delivered"] == 2
    assert main(["events", "resend", str(listed[1]["id"])]) == 0
    assert run_relay(engine, endpoint, clock)["delivered"] == 1
    assert main(["events", "resend", "999999"]) == 1
    assert main(["events", "resend"]) == 2
