"""Two different events for one payment (or one order) at the same instant, on real PostgreSQL.

Each race releases the two deliveries together from two connections (a barrier), and holds each
transaction, once it has loaded the payment, until the rival has loaded it too or waits for its
lock: without `FOR UPDATE` both read the same state and the later commit overwrites the earlier
one. The result must be that of one of the two serial orders, every round.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import make_url

from domain.providers import standard
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage import queries
from tasks.storage.engine import make_engine
from tasks.storage.tables import refunds
from tasks.storage.uow import UnitOfWork
from tests.integration.stack import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy()
ROUNDS = 12


@dataclass(frozen=True)
class Scenario:
    """Payments of one order (amounts), events applied before the race, the two rivals."""

    amounts: tuple[int, ...]
    before: tuple[tuple[int, str, dict[str, Any]], ...]  # (payment index, type, data)
    rivals: tuple[tuple[int, str, dict[str, Any]], tuple[int, str, dict[str, Any]]]


TWO_REFUNDS_PAST_THE_AMOUNT = Scenario(
    amounts=(1000,),
    before=((0, "payment.succeeded", {}),),
    rivals=(
        (0, "payment.refunded", {"amount": 600, "refund_reference": "rf_a"}),
        (0, "payment.refunded", {"amount": 600, "refund_reference": "rf_b"}),
    ),
)
# A refund needs a confirmed payment (one that is not waits for it), so a confirmation and a
# refund that both change something share their order: its paid and refunded sums.
A_CONFIRMATION_AND_A_REFUND = Scenario(
    amounts=(1000, 1000),
    before=((0, "payment.succeeded", {}),),
    rivals=(
        (1, "payment.succeeded", {}),
        (0, "payment.refunded", {"amount": 1000, "refund_reference": "rf_full"}),
    ),
)


# The one statement that loads and locks an order with its payment (tasks/storage/repositories).
PAYMENT_LOADED = "SELECT orders.id AS o_id, orders.reference AS o_reference"
DELIVERY_LOADED = "SELECT deliveries.id, deliveries.provider"


class Rendezvous:
    """Holds a transaction that has just loaded a row (`after`: a payment, by default) until
    its rival has loaded it too,
    waits for a row lock, or is done: the moment where a missing lock lets both read."""

    def __init__(self, admin_conninfo: str, after: str = PAYMENT_LOADED) -> None:
        self._admin = admin_conninfo
        self._after = after
        self._lock = threading.Lock()
        self.pids: dict[int, int] = {}  # thread ident -> backend pid
        self.loaded: set[int] = set()
        self.done: set[int] = set()

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _remember(conn: Any, _cursor: Any, *_args: Any) -> None:
            with self._lock:
                self.pids.setdefault(
                    threading.get_ident(), conn.connection.dbapi_connection.info.backend_pid
                )

        @event.listens_for(engine, "after_cursor_execute")
        def _loaded(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().startswith(self._after):
                self._wait_for_rival()

    def finished(self) -> None:
        with self._lock:
            self.done.add(threading.get_ident())

    def _wait_for_rival(self) -> None:
        me = threading.get_ident()
        with self._lock:
            self.loaded.add(me)
        deadline = time.monotonic() + 10
        with psycopg.connect(self._admin, autocommit=True) as admin:
            while time.monotonic() < deadline:
                with self._lock:
                    rivals = [t for t in self.pids if t != me]
                    if any(t in self.loaded or t in self.done for t in rivals):
                        return
                    pids = [self.pids[t] for t in rivals]
                if pids:
                    waiting = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
                        (pids,),
                    ).fetchone()
                    if waiting is not None and waiting[0] > 0:
                        return
                time.sleep(0.002)
        raise AssertionError("the rival transaction neither loaded the payment nor waited")


@pytest.fixture(scope="module")
def database() -> str:
    return fresh_database("concurrent_events")


@pytest.fixture(scope="module")
def engine(database: str) -> Iterator[Engine]:
    engine = make_engine(database, lock_timeout_ms=30_000)
    yield engine
    engine.dispose()


def body(event_type: str, reference: str, amount: int, data: dict[str, Any]) -> bytes:
    fields = {"payment_reference": reference, "amount": amount, "currency": "EUR", **data}
    return json.dumps({"type": event_type, "data": fields}).encode()


def prepare(engine: Engine, scenario: Scenario, name: str) -> tuple[list[str], list[int]]:
    """Register the order and its payments, apply `before`; store the rivals, unprocessed."""
    order = f"order-{name}"
    create_order(
        UnitOfWork(engine), reference=order, total=sum(scenario.amounts), currency="EUR", now=NOW
    )
    references = [f"pay-{name}-{n}" for n in range(len(scenario.amounts))]
    for reference, amount in zip(references, scenario.amounts, strict=True):
        create_payment(
            UnitOfWork(engine),
            order_reference=order,
            provider="shop",
            provider_reference=reference,
            amount=amount,
            currency="EUR",
            now=NOW,
        )

    def store(n: int, item: tuple[int, str, dict[str, Any]]) -> int:
        which, event_type, data = item
        amount = data.get("amount", scenario.amounts[which])
        raw = body(event_type, references[which], amount, data)
        return store_delivery(
            UnitOfWork(engine),
            standard.parse("shop", f"msg-{name}-{n}", raw),
            headers="{}",
            body=raw,
            received_at=NOW,
        )

    for n, item in enumerate(scenario.before):
        process_delivery(store(n, item), UnitOfWork(engine), NOW, POLICY)
    rivals = [store(len(scenario.before) + n, item) for n, item in enumerate(scenario.rivals)]
    return [order], rivals


def observed(engine: Engine, order: str, rivals: list[int]) -> tuple[Any, ...]:
    """What a user would check: each rival's outcome, each payment, the order's sums."""
    with engine.connect() as conn:
        view = queries.order(conn, order)
        assert view is not None
        outcomes = []
        for delivery_id in rivals:
            delivery = queries.delivery(conn, delivery_id)
            assert delivery is not None and delivery["outcome"] is not None
            outcome = delivery["outcome"]
            outcomes.append((outcome["kind"], outcome["reason"], outcome["transition"]))
        payments = []
        for payment in view["payments"]:
            shown = queries.payment(conn, payment["id"])
            assert shown is not None
            stored_refunds = conn.execute(
                select(func.count()).where(refunds.c.payment_id == payment["id"])
            ).scalar_one()
            payments.append((shown["state"], shown["refunded_amount"], stored_refunds))
    return (
        tuple(outcomes),
        tuple(payments),
        (view["paid_amount"], view["refunded_amount"], view["status"]),
    )


def serial(engine: Engine, scenario: Scenario, name: str, order_of: tuple[int, int]) -> Any:
    (order,), rivals = prepare(engine, scenario, name)
    for index in order_of:
        process_delivery(rivals[index], UnitOfWork(engine), NOW, POLICY)
    return observed(engine, order, rivals)


def race(engine: Engine, rendezvous: Rendezvous, rivals: list[int]) -> list[Any]:
    barrier = threading.Barrier(len(rivals))
    errors: list[BaseException] = []
    results: list[Any] = []

    def run(delivery_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(process_delivery(delivery_id, UnitOfWork(engine), NOW, POLICY))
        except BaseException as error:
            errors.append(error)
        finally:
            rendezvous.finished()

    threads = [threading.Thread(target=run, args=(d,)) for d in rivals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.parametrize(
    "scenario",
    [TWO_REFUNDS_PAST_THE_AMOUNT, A_CONFIRMATION_AND_A_REFUND],
    ids=["two_refunds_past_the_amount", "a_confirmation_and_a_refund"],
)
def test_two_events_at_the_same_instant_end_as_in_some_serial_order(
    engine: Engine, database: str, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    serial_results = {
        serial(engine, scenario, f"{name}-ab", (0, 1)),
        serial(engine, scenario, f"{name}-ba", (1, 0)),
    }
    admin = make_url(database).set(drivername="postgresql").render_as_string(False)
    for round_ in range(ROUNDS):
        (order,), rivals = prepare(engine, scenario, f"{name}-{round_}")
        rendezvous = Rendezvous(admin)
        racing = make_engine(database, lock_timeout_ms=30_000)
        rendezvous.attach(racing)
        try:
            race(racing, rendezvous, rivals)
        finally:
            racing.dispose()
        assert rendezvous.loaded, f"no statement began with {PAYMENT_LOADED!r}: update it"
        result = observed(engine, order, rivals)
        assert result in serial_results, (
            f"round {round_}: {result} is neither serial order: {sorted(serial_results)}"
        )


def test_one_delivery_run_twice_at_the_same_instant_gets_one_outcome_both_runs_return(
    engine: Engine, database: str
) -> None:
    """A redelivery while the first run still works (visibility timeout, a sweep): the
    delivery's lock makes the second run wait, then return the outcome the first recorded."""
    scenario = Scenario(amounts=(1000,), before=(), rivals=((0, "payment.succeeded", {}),) * 2)
    admin = make_url(database).set(drivername="postgresql").render_as_string(False)
    for round_ in range(ROUNDS):
        (order,), (delivery_id, _) = prepare(engine, scenario, f"same-{round_}")
        rendezvous = Rendezvous(admin, after=DELIVERY_LOADED)
        racing = make_engine(database, lock_timeout_ms=30_000)
        rendezvous.attach(racing)
        try:
            results = race(racing, rendezvous, [delivery_id, delivery_id])
        finally:
            racing.dispose()
        assert [r.outcome.transition for r in results] == ["pending->confirmed"] * 2
        shown = observed(engine, order, [delivery_id])
        assert shown == (
            (("applied", None, "pending->confirmed"),),
            (("confirmed", 0, 0),),
            (1000, 0, "paid"),
        ), f"round {round_}"
