"""The hot path's statements, run on PostgreSQL straight through psycopg.

Each statement is a SQLAlchemy Core statement built once (repositories.py, outbox.py). On
PostgreSQL it is compiled once to psycopg's SQL text and run on the unit of work's own
connection, in its transaction, its rows as named tuples: SQLAlchemy's execution of a cached
statement (parameter and result processing, a result object per call) cost about twice
psycopg's own time per statement, a quarter of a worker's CPU per delivery. On SQLite
SQLAlchemy runs it as usual, its type processing included. Either way a failure is raised as
SQLAlchemy's DBAPIError, so that `is_transient` and the callers see one kind of error.

Only statements whose parameters need no processing on PostgreSQL may run here: plain values,
aware datetimes (what UtcDateTime checks on the way in, psycopg stores as they are), lists
for arrays. Datetimes come back aware, in the session's time zone: `utc()` them.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Dialect
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

_CURSOR = "payhook.direct.cursor"  # where a pooled connection keeps its cursor
# Compiled once per statement object (they are module constants, kept alive here too).
_COMPILED: dict[int, tuple[object, str, dict[str, Any], _NamedRows]] = {}
_POSTGRES = PGDialect_psycopg()  # type: ignore[no-untyped-call]


def rows(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
    """Every row the statement returns (none for one that returns nothing)."""
    if conn.dialect.name != "postgresql":
        result = conn.execute(statement, params)
        return result.all() if result.returns_rows else []
    sql, defaults, named_row = _compiled(statement, conn.dialect)
    values = {**defaults, **params}
    pooled = conn.connection
    driver = pooled.driver_connection
    # The engine's cursor events fire as for any statement (the tests' statement listeners).
    events = cast(Any, conn).dispatch
    try:
        cursor = _cursor(pooled.info, driver)
        events.before_cursor_execute(conn, cursor, sql, values, None, False)
        # Rows in binary: nothing to parse from text on the way back.
        cursor.execute(sql, values, binary=True)
        events.after_cursor_execute(conn, cursor, sql, values, None, False)
        answer = cursor.pgresult
        if answer is None or answer.status != pq.ExecStatus.TUPLES_OK:
            return []
        make = named_row(answer)
        return [make(row) for row in cursor.fetchall()]
    except psycopg.Error as error:
        invalidated = conn.dialect.is_disconnect(cast(Any, error), driver, None)
        if invalidated:
            conn.invalidate(error)
        # The parameters stay out of the message: they hold raw bodies and headers.
        raise DBAPIError.instance(
            sql,
            values,
            error,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=invalidated,
        ) from error


def one_or_none(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Any:
    found = rows(conn, statement, params)
    if len(found) > 1:
        raise ValueError(f"more than one row from {statement}")
    return found[0] if found else None


def utc(value: datetime | None) -> datetime | None:
    """A datetime read here as UtcDateTime reads one: aware, in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cursor(info: dict[Any, Any], driver: Any) -> psycopg.Cursor[Any]:
    """The one cursor this process keeps on a pooled connection (kept with the connection)."""
    cursor: psycopg.Cursor[Any] | None = info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = info[_CURSOR] = driver.cursor()
    return cursor


class _NamedRows:
    """Rows of one statement as named tuples, their class made from its first result's field
    names (psycopg's namedtuple_row builds a whole cursor description per run for the same).
    The cursor itself hands out plain tuples: it serves every statement in turn."""

    def __init__(self) -> None:
        self._make: Callable[[Sequence[Any]], Any] | None = None

    def __call__(self, result: pq.abc.PGresult) -> Callable[[Sequence[Any]], Any]:
        if self._make is None:
            names = tuple((result.fname(i) or b"?").decode() for i in range(result.nfields))
            row_class: Any = namedtuple("Row", list(names))  # type: ignore[misc]
            self._make = row_class._make
        return self._make


def postgres_text(statement: Executable) -> tuple[str, dict[str, Any]]:
    """The statement as psycopg's SQL text for PostgreSQL, and its own parameter values."""
    sql, defaults, _ = _compiled(statement, _POSTGRES)
    return sql, defaults


def _compiled(statement: Executable, dialect: Dialect) -> tuple[str, dict[str, Any], _NamedRows]:
    found = _COMPILED.get(id(statement))
    if found is None or found[0] is not statement:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("expanding parameters cannot run directly: use SQLAlchemy")
        # The statement's own values (`values(status="processed")`) are parameters too.
        found = (statement, compiled.string, dict(compiled.params), _NamedRows())
        _COMPILED[id(statement)] = found
    return found[1], found[2], found[3]
