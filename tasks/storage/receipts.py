"""The receiver's one write: a verified delivery stored by a single INSERT that commits alone.

Through a unit of work a delivery costs BEGIN, the INSERT through SQLAlchemy's execution, and
COMMIT: three round trips and most of the storing CPU. One INSERT … RETURNING outside a
transaction is atomic and committed when it returns, so it is run here on the pooled connection's
driver connection, its SQL compiled once per engine from the same table. SQLAlchemy still checks
the connection out (pre-pinged), and a driver error is raised as SQLAlchemy's DBAPIError (the
connection invalidated when it is lost), as the unit of work would raise it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

from tasks.storage.tables import deliveries, new_delivery

_ADD = insert(deliveries).returning(deliveries.c.id)


class Receipts:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect
        compiled = _ADD.compile(dialect=dialect, column_keys=_COLUMNS)
        self._sql = str(compiled)
        self._order = tuple(compiled.positiontup or ()) if dialect.positional else None
        self._processors = {
            name: processor
            for name in _COLUMNS
            if (processor := _processor(deliveries.c[name].type, dialect)) is not None
        }
        # psycopg opens a transaction before a statement unless told not to; payhook's SQLite
        # connections leave transaction control to the caller (engine.py) already.
        self._autocommit_attribute = dialect.name == "postgresql"

    def add(
        self,
        *,
        provider: str,
        event_id: str,
        event_type: str,
        received_at: datetime,
        headers: str,
        body: bytes,
    ) -> int:
        """Store one received delivery, committed; its id."""
        values = new_delivery(
            provider=provider,
            event_id=event_id,
            event_type=event_type,
            received_at=received_at,
            headers=headers,
            body=body,
        )
        for name, processor in self._processors.items():
            values[name] = processor(values[name])
        parameters: Any = (
            values if self._order is None else tuple(values[name] for name in self._order)
        )
        with self._engine.connect() as conn:
            driver: Any = conn.connection.dbapi_connection
            dialect = self._engine.dialect
            try:
                if self._autocommit_attribute:
                    driver.autocommit = True
                try:
                    cursor = driver.cursor()
                    try:
                        cursor.execute(self._sql, parameters)
                        row = cursor.fetchone()
                    finally:
                        cursor.close()
                finally:
                    # Never back in the pool in autocommit: a unit of work needs its transaction.
                    if self._autocommit_attribute and not driver.closed:
                        driver.autocommit = False
            except dialect.loaded_dbapi.Error as error:
                lost = dialect.is_disconnect(error, driver, None)
                if lost:
                    conn.invalidate(error)
                raise DBAPIError.instance(
                    self._sql,
                    None,
                    error,
                    dialect.loaded_dbapi.Error,
                    connection_invalidated=lost,
                    dialect=dialect,
                ) from error
        return int(row[0])


_COLUMNS = [
    "provider",
    "event_id",
    "event_type",
    "received_at",
    "status",
    "attempts",
    "sweeps",
    "redeliveries",
    "next_attempt_at",
    "published_at",
    "headers",
    "body",
]


def _processor(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this column before the driver gets it (SQLite: a
    datetime as its text form), as the dialect's own version of the type does it."""
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(
        dialect
    )
    return processor
