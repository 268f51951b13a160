"""The receiver's store on PostgreSQL: deliveries INSERTed from the event loop itself.

A pool of psycopg async connections (psycopg_pool), in autocommit, serves the webhook
receivers: one delivery is one INSERT that commits as it runs, several (an Adyen batch) one
transaction. No thread and no SQLAlchemy on the way: a trip to a request thread and back cost a
quarter of the receiver's CPU per delivery. The statement and its parameters are the same as
`Deliveries.add`'s (repositories.py); SQLite keeps that path.

A connection is not checked before each use, which would cost a round trip per delivery. One
found dead (PostgreSQL restarted, a proxy dropped it) is discarded, every idle one is checked,
and the store is tried once more. A failure is raised as SQLAlchemy's DBAPIError, as the
other stores raise it, its parameters (bodies, headers) kept out of the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError

from domain.events import PaymentEvent
from tasks.storage.direct import postgres_text
from tasks.storage.engine import postgres_connect_args
from tasks.storage.limits import check_storable
from tasks.storage.repositories import ADD_DELIVERY, intake_fingerprint, new_delivery

# How long a request waits for a pooled connection before it is answered 503: with every
# connection busy, or none to be had (PostgreSQL down, the pool reconnecting in the background).
CONNECTION_WAIT_S = 2.0

Item = tuple[PaymentEvent, str, bytes]  # an event, the kept headers as JSON, the raw body


class Intake:
    def __init__(
        self,
        url: str,
        *,
        size: int,
        lock_timeout_ms: int,
        prepared_statements: bool = True,
    ) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            conninfo,
            min_size=size,
            max_size=size,
            open=False,
            timeout=CONNECTION_WAIT_S,
            name="payhook-intake",
            kwargs={
                "autocommit": True,
                **postgres_connect_args(lock_timeout_ms, prepared_statements),
            },
        )
        self._sql, self._defaults = postgres_text(ADD_DELIVERY)
        self._opened = False

    async def open(self, wait_s: float = 0.0) -> bool:
        """Open the pool (once) and wait up to `wait_s` for all its connections; False if they
        were not all open by then: they are opened in the background meanwhile, and until one
        is, a request waits CONNECTION_WAIT_S for it, then is answered 503."""
        if not self._opened:
            self._opened = True
            await self._pool.open(wait=False)
        if wait_s <= 0:
            return True
        try:
            await self._pool.wait(timeout=wait_s)
        except psycopg.OperationalError:
            return False
        return True

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def store(self, items: Sequence[Item], received_at: datetime) -> list[int]:
        """Store verified deliveries, all or none; their ids. Unstorable before any trip."""
        for event, _, _ in items:
            check_storable(event)
        rows = [
            new_delivery(
                e.provider,
                e.event_id,
                e.event_type,
                received_at,
                headers,
                body,
                intake_fingerprint(e),
            )
            for e, headers, body in items
        ]
        await self.open()
        try:
            return await self._insert(rows)
        except _ConnectionLost:
            # PostgreSQL restarted, or a proxy dropped idle connections: the others in the pool
            # are likely dead too. Check each (replacing the dead), then try once more. Nothing
            # was committed on a connection lost mid-way (autocommit, or BEGIN), unless the
            # COMMIT was answered and the answer lost: then the worker records the copy an
            # acknowledged duplicate, as it does a provider's retry.
            await self._pool.check()
        except psycopg.Error as error:
            raise _wrapped(self._sql, error) from error
        try:
            return await self._insert(rows)
        except _ConnectionLost as lost:
            raise _wrapped(self._sql, lost.error) from lost.error
        except psycopg.Error as error:
            raise _wrapped(self._sql, error) from error

    async def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        ids: list[int] = []
        # Given back when done: the pool replaces a connection that broke meanwhile.
        async with self._pool.connection() as conn:
            try:
                cursor = conn.cursor()
                if len(rows) == 1:
                    ids.append(await self._one(cursor, rows[0]))
                else:
                    async with conn.transaction():
                        for row in rows:
                            ids.append(await self._one(cursor, row))
            except psycopg.OperationalError as error:
                if conn.broken:
                    raise _ConnectionLost(error) from error
                raise
        return ids

    async def _one(self, cursor: psycopg.AsyncCursor[Any], row: dict[str, Any]) -> int:
        await cursor.execute(self._sql, {**self._defaults, **row}, binary=True)
        found = await cursor.fetchone()
        assert found is not None  # INSERT … RETURNING
        return int(found[0])


class _ConnectionLost(Exception):
    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def _wrapped(sql: str, error: psycopg.Error) -> StatementError:
    """SQLAlchemy's DBAPIError for `error`, as the receiver catches every store's."""
    return DBAPIError.instance(sql, {}, error, psycopg.Error, hide_parameters=True)
