"""The unit of work: one connection, one transaction, visible as `with uow:` … `commit()`."""

from __future__ import annotations

from types import TracebackType

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

    def autocommitting(self) -> UnitOfWork:
        """This unit of work with every statement committed as it runs: on PostgreSQL one
        round trip each, with no BEGIN and COMMIT around it; on SQLite, one transaction."""
        self._autocommit = True
        return self

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `with uow:`")
        return self._conn

    def __enter__(self) -> UnitOfWork:
        self._conn = self._engine.connect()
        if self._autocommit and self._conn.dialect.name == "postgresql":
            # Returned to the pool, the connection gets its usual transactions back.
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
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
            if self._conn is not None:
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
