"""The unit of work: one connection, one transaction, visible as `with uow:` … `commit()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction

from tasks.storage.outbox import Outbox, Sends
from tasks.storage.repositories import (
    ApiIdempotency,
    Bodies,
    Deliveries,
    IdempotencyKeys,
    Payments,
)


class UnitOfWork:
    deliveries: Deliveries
    idempotency_keys: IdempotencyKeys
    payments: Payments
    api_keys: ApiIdempotency
    bodies: Bodies
    outbox: Outbox
    sends: Sends

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None
        self._autocommit = False
        self._autocommitted: Any = None  # the driver connection put in autocommit, to put back
        self._held: Connection | None = None

    def autocommitting(self) -> UnitOfWork:
        """The next `with` of this unit of work with every statement committed as it runs: on
        PostgreSQL one round trip each, with no BEGIN and COMMIT around it; on SQLite, one
        transaction."""
        self._autocommit = True
        return self

    @contextmanager
    def holding(self) -> Iterator[UnitOfWork]:
        """One pooled connection for every `with` of this unit of work inside (a task's start
        mark, then its processing), returned to the pool at the end."""
        self._held = self._engine.connect()
        try:
            yield self
        finally:
            held, self._held = self._held, None
            held.close()

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `with uow:`")
        return self._conn

    def __enter__(self) -> UnitOfWork:
        self._conn = self._held if self._held is not None else self._engine.connect()
        if self._autocommit and self._conn.dialect.name == "postgresql":
            # psycopg's own switch, set back on the way out: SQLAlchemy begins and commits
            # nothing on the server for psycopg, so its transaction is only a marker here.
            self._autocommitted = self._conn.connection.driver_connection
            self._autocommitted.autocommit = True
        self._tx = self._conn.begin()
        self.deliveries = Deliveries(self._conn)
        self.idempotency_keys = IdempotencyKeys(self._conn)
        self.payments = Payments(self._conn)
        self.api_keys = ApiIdempotency(self._conn)
        self.bodies = Bodies(self._conn)
        self.outbox = Outbox(self._conn)
        self.sends = Sends(self._conn)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tx is not None and self._tx.is_active:
                self._tx.rollback()
        finally:
            driver, self._autocommitted, self._autocommit = self._autocommitted, None, False
            if driver is not None and not driver.closed:
                driver.autocommit = False
            if self._conn is not None and self._conn is not self._held:
                self._conn.close()
            self._conn = self._tx = None

    def commit(self) -> None:
        if self._tx is None:
            raise RuntimeError("the unit of work is not open: use `with uow:`")
        self.outbox.flush()  # notifications still waiting to be written (outbox.py)
        self._tx.commit()

    def rollback(self) -> None:
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()
