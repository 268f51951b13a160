"""Relay the outbox to the host's endpoints: each notification to each endpoint, in order per
order, until it is delivered (2xx) or its retry window is over (failed, replayable).

A send is leased in a short transaction, posted outside any transaction, and its result
recorded in another: a relay killed while posting leaves the lease to expire, and the next
relay sends the same notification again under the same `webhook-id`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.notifications import message_bytes
from tasks.storage.outbox import Claimed
from tasks.storage.uow import UnitOfWork

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint said: an HTTP status, or None and the error when nothing came back."""

    status: int | None
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Post = Callable[[str, str, bytes], Answer]
"""Post one signed message: endpoint URL, webhook-id, body."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayPolicy:
    retry_window: timedelta = timedelta(days=3)
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 3600.0
    # Longer than the longest post (the sender's timeouts are shorter), so that a lease only
    # runs out when its relay died.
    lease: timedelta = timedelta(seconds=30)
    batch: int = 20  # sends leased per endpoint per round; at most one per order
    parallel: int = 8  # posts in flight at once
    run_budget_s: float = 20.0  # a relay run stops starting rounds after this

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential with jitter: half fixed, half random, never over the cap."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (1 << min(attempt - 1, 30)))
        return ceiling / 2 + (rng or _RNG).uniform(0, ceiling / 2)


@dataclass(slots=True)
class RelayReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    rounds: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "rounds": self.rounds,
        }


def relay(
    unit_of_work: Callable[[], UnitOfWork],
    clock: Callable[[], datetime],
    endpoints: Sequence[str],
    post: Post,
    policy: RelayPolicy,
    *,
    elapsed: Callable[[], float],
) -> RelayReport:
    """Send what is due to every endpoint, round after round while there is progress."""
    report = RelayReport()
    if not endpoints:
        return report
    ids = _endpoint_ids(unit_of_work(), clock(), endpoints, policy)
    urls = dict(zip(ids, endpoints, strict=True))
    with ThreadPoolExecutor(max_workers=policy.parallel) as pool:
        while elapsed() < policy.run_budget_s:
            claimed = _claim(unit_of_work(), clock(), ids, policy)
            if not claimed:
                break
            report.rounds += 1
            answers = list(pool.map(lambda send: _post(send, urls, post), claimed))
            _record(unit_of_work(), clock(), claimed, answers, policy, report)
    return report


def _endpoint_ids(
    uow: UnitOfWork, now: datetime, endpoints: Sequence[str], policy: RelayPolicy
) -> list[int]:
    with uow:
        ids = [uow.sends.endpoint(url, now, policy.retry_window) for url in endpoints]
        uow.commit()
    return ids


def _claim(
    uow: UnitOfWork, now: datetime, endpoint_ids: Sequence[int], policy: RelayPolicy
) -> list[Claimed]:
    claimed: list[Claimed] = []
    with uow:
        for endpoint_id in endpoint_ids:
            uow.sends.materialize(endpoint_id, now)
            claimed += uow.sends.claim(endpoint_id, now, policy.lease, policy.batch)
        uow.commit()
    return claimed


def _post(send: Claimed, urls: dict[int, str], post: Post) -> Answer:
    body = message_bytes(
        type=send.type,
        created_at=send.created_at,
        order_sequence=send.order_sequence,
        data=send.data,
    )
    return post(urls[send.endpoint_id], str(send.notification_id), body)


def _record(
    uow: UnitOfWork,
    now: datetime,
    claimed: Sequence[Claimed],
    answers: Sequence[Answer],
    policy: RelayPolicy,
    report: RelayReport,
) -> None:
    with uow:
        for send, answer in zip(claimed, answers, strict=True):
            if answer.delivered:
                uow.sends.delivered(send, answer.status or 200, now)
                report.delivered += 1
                continue
            why = answer.error or f"HTTP {answer.status}"
            give_up_at = send.retry_from + policy.retry_window
            if now >= give_up_at:
                uow.sends.failed(send, answer.status, why)
                report.failed += 1
            else:
                # The last try falls at the end of the window, not after it.
                wait = timedelta(seconds=policy.backoff(send.attempt))
                uow.sends.retry(send, answer.status, why, min(now + wait, give_up_at))
                report.retrying += 1
        uow.commit()
