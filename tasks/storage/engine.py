"""Build an engine per process: SQLite in WAL mode with BEGIN IMMEDIATE, or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

LOCK_TIMEOUT_MS = 5_000
PREPARE_THRESHOLD = 5  # psycopg's own default


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    pre_ping: bool = True,
    max_overflow: int | None = None,
    prepared_statements: bool = True,
) -> Engine:
    """An engine for `url`; nothing connects until first use.

    `pre_ping=False` saves a round trip per transaction where a dead pooled connection is
    already handled: a worker's task retries the transient error it raises. `max_overflow`
    (default: as many as `pool_size`) connections are opened beyond the pool when it is
    exhausted, and closed again when returned.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        connect_args=postgres_connect_args(lock_timeout_ms, prepared_statements),
    )


def postgres_connect_args(lock_timeout_ms: int, prepared_statements: bool) -> dict[str, Any]:
    """psycopg's connection arguments for every payhook connection to PostgreSQL (the engine's,
    the receiver's async pool's)."""
    return {
        # A lock held longer than this is a transient error, retried by the task. (Through
        # PgBouncer this startup option is dropped: deploy/SCALING.md says what to do.)
        "options": f"-c lock_timeout={lock_timeout_ms}",
        # psycopg prepares a statement on the server once it ran five times on one
        # connection: the hot path's statements are parsed and planned once, not per
        # delivery (a third of the worker's PostgreSQL CPU per delivery).
        "prepare_threshold": PREPARE_THRESHOLD if prepared_statements else None,
    }


def _sqlite_engine(url: str) -> Engine:
    # NullPool: every unit of work opens its own connection, so no connection crosses a fork.
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # SQLite has no row locks: the write lock taken at BEGIN serializes writers instead,
        # so a duplicate still finds the first claim committed.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
