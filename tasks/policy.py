"""The retry policy, declared once: what is retried, how soon, and for how long."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.outcomes import Reason

_RNG = random.Random()


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    # A payment may be registered by the host after the provider's webhook arrives.
    unmatched_grace: timedelta = timedelta(minutes=10)
    # A refund, capture or dispute may arrive before the event it depends on, which the
    # provider may retry for days (after a 503, say): wait as long as they retry.
    await_state: timedelta = timedelta(days=3)
    # Between two attempts of a waiting delivery. One waiting on a payment's state is woken
    # by that state's change; its own attempts are only a backstop, so they may be rare.
    deferral_base_s: float = 2.0
    deferral_cap_s: float = 60.0
    awaiting_state_cap_s: float = 600.0
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

    def wait_over(self, reason: Reason | None, since: datetime, now: datetime) -> bool:
        """Whether a delivery deferred for `reason` has waited as long as it may."""
        if reason is Reason.AWAITING_STATE:
            return now - since >= self.await_state
        return self.grace_over(since, now)

    def deferral_delay(
        self, attempt: int, rng: random.Random | None = None, reason: Reason | None = None
    ) -> float:
        cap = self.awaiting_state_cap_s if reason is Reason.AWAITING_STATE else self.deferral_cap_s
        return _backoff(attempt, self.deferral_base_s, cap, rng)

    def transient_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return _backoff(attempt, self.transient_base_s, self.transient_cap_s, rng)

    @property
    def longest_countdown_s(self) -> float:
        """The longest broker countdown: only transient errors retry through the broker
        (a deferred delivery waits in the database)."""
        return self.transient_cap_s


def _backoff(attempt: int, base: float, cap: float, rng: random.Random | None) -> float:
    """Exponential backoff with jitter: half fixed, half random, never over the cap."""
    ceiling = min(cap, base * (1 << min(attempt, 30)))
    return ceiling / 2 + (rng or _RNG).uniform(0, ceiling / 2)
