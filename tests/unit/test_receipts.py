"""The receiver's store: a single delivery, one INSERT that commits as it runs, writes exactly
the row a batch writes in its transaction, and a database it cannot write to is a SQLAlchemy
error (the receiver's 503)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from domain.events import Action, PaymentEvent
from tasks.migrate import upgrade
from tasks.registering import store_deliveries
from tasks.storage.engine import make_engine
from tasks.storage.uow import UnitOfWork
from tests.unit.common import NOW

EVENT = PaymentEvent("stripe", "evt_1", "payment_intent.succeeded", Action.UNSUPPORTED)


def test_a_single_delivery_is_stored_as_the_same_row_as_in_a_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/payhook.db"
    upgrade(url)
    engine = make_engine(url)
    item = (EVENT, '{"content-type": "application/json"}', b'{"id": "evt_1"}\x00')
    first, _ = store_deliveries(UnitOfWork(engine), [item, item], received_at=NOW)
    (second,) = store_deliveries(UnitOfWork(engine), [item], received_at=NOW)
    # Read as the driver stores them (SQLite keeps datetimes as text), not as parsed back.
    raw = create_engine(url)
    with raw.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT * FROM deliveries WHERE id IN (?, ?) ORDER BY id", (first, second)
        ).all()
    assert second == first + 2
    assert rows[0][1:] == rows[1][1:]


def test_a_database_without_the_table_is_a_sqlalchemy_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")  # never migrated
    with pytest.raises(SQLAlchemyError):
        store_deliveries(UnitOfWork(engine), [(EVENT, "{}", b"{}")], received_at=NOW)
