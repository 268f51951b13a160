"""The retry policy, declared once: what is retried, how soon, and for how long."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATEs that say "try again": serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_RNG = random.Random()


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    # A payment may be registered by the host after the provider's webhook arrives.
    unmatched_grace: timedelta = timedelta(minutes=10)
    deferral_base_s: float = 2.0
    deferral_cap_s: float = 60.0
    transient_base_s: float = 0.5
    transient_cap_s: float = 30.0
    # Broker retries of one task message, deferrals and transient errors together.
    max_task_retries: int = 100
    # A delivery without an outcome whose message was published this long ago and that no
    # worker runs may be lost: the sweeper publishes it again (at most once per this period).
    sweep_after: timedelta = timedelta(minutes=5)
    sweep_batch: int = 500
    # Attempts a worker started and never finished (killed, crashed, its message lost) before
    # the delivery is recorded dead: a body that kills its worker every time is not retried
    # forever. A delivery merely queued, or handed back by a clean restart, counts nothing.
    max_sweeps: int = 5
    soft_time_limit_s: int = 50
    time_limit_s: int = 60

    def grace_over(self, received_at: datetime, now: datetime) -> bool:
        return now - received_at >= self.unmatched_grace

    def deferral_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return _backoff(attempt, self.deferral_base_s, self.deferral_cap_s, rng)

    def transient_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return _backoff(attempt, self.transient_base_s, self.transient_cap_s, rng)

    @property
    def longest_countdown_s(self) -> float:
        return max(self.deferral_cap_s, self.transient_cap_s)


def _backoff(attempt: int, base: float, cap: float, rng: random.Random | None) -> float:
    """Exponential backoff with jitter: half fixed, half random, never over the cap."""
    ceiling = min(cap, base * (1 << min(attempt, 30)))
    return ceiling / 2 + (rng or _RNG).uniform(0, ceiling / 2)


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
