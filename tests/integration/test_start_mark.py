"""The start mark on real PostgreSQL: committed on its own without waiting for the disk, seen at
once by every other session, and no other commit of the connection loses its wait."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import Engine, text

from tasks.policy import RetryPolicy
from tasks.processing import start_attempt
from tasks.storage.engine import make_engine
from tasks.storage.uow import UnitOfWork
from tests.integration.stack import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    # One pooled connection, so that every unit of work below gets the same one back.
    engine = make_engine(fresh_database("start_mark"), pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def _received(engine: Engine) -> int:
    with UnitOfWork(engine) as uow:
        delivery_id = uow.deliveries.add(
            provider="stripe",
            event_id="evt_start_mark",
            event_type="payment_intent.succeeded",
            received_at=datetime.now(UTC),
            headers="{}",
            body=b"{}",
        )
        uow.commit()
    return delivery_id


def _synchronous_commit(uow: UnitOfWork) -> str:
    return str(uow.connection.execute(text("SHOW synchronous_commit")).scalar_one())


def test_the_mark_is_seen_by_another_session_at_once(engine: Engine) -> None:
    delivery_id = _received(engine)
    uow = UnitOfWork(engine)
    with uow.holding():
        assert start_attempt(delivery_id, uow, datetime.now(UTC), RetryPolicy()) is None
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url) as other:  # the pool's only connection is held
            (started,) = other.execute(
                "SELECT started_at FROM deliveries WHERE id = %s", (delivery_id,)
            ).fetchall()[0]
    assert started is not None


def test_the_next_transaction_on_the_connection_waits_for_the_disk(engine: Engine) -> None:
    delivery_id = _received(engine)
    uow = UnitOfWork(engine)
    with uow.holding():
        start_attempt(delivery_id, uow, datetime.now(UTC), RetryPolicy())
        with uow:  # where the task's processing commits
            assert _synchronous_commit(uow) == "on"
    with UnitOfWork(engine) as later:  # and whatever the pooled connection runs next
        assert _synchronous_commit(later) == "on"


def test_a_mark_inside_a_transaction_leaves_its_commit_waiting_for_the_disk(
    engine: Engine,
) -> None:
    delivery_id = _received(engine)
    with UnitOfWork(engine) as uow:
        started = uow.deliveries.start(delivery_id, datetime.now(UTC), max_lost=5)
        assert started is not None and started.lost == 0
        assert _synchronous_commit(uow) == "on"
        uow.commit()
