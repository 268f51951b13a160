"""What storage failures mean to the use cases: payhook's own errors, and which are transient.

The classification lives with the storage, so that the use cases and the retry policy never
import SQLAlchemy.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATEs that say "try again": serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


class AlreadyExists(Exception):
    """A unique reference that is already taken."""


class Unstorable(ValueError):
    """A delivery the database cannot hold as it is (a field too long, a NUL character): the
    same answer on every retry, so a reason for the sender, never "try again"."""


def is_transient(error: BaseException) -> bool:
    """Connection lost, serialization failure, deadlock, lock timeout: worth another try."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    # psycopg reports a lost or refused connection without a SQLSTATE; SQLite says "locked".
    return isinstance(error, OperationalError) and "no such table" not in str(error.orig)


def cause(error: BaseException) -> str:
    """What failed, for a log line: the driver's error class (LockNotAvailable,
    SerializationFailure, …) rather than SQLAlchemy's wrapper around it."""
    orig = error.orig if isinstance(error, DBAPIError) else None
    return type(orig if isinstance(orig, BaseException) else error).__name__
