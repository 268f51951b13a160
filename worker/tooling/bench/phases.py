"""The measurements of `payhook bench`, one method each; every wait is bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine, delete, func, insert, select

from domain.payments import PaymentState
from domain.providers import stripe
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery
from tasks.registering import store_deliveries
from tasks.storage.tables import deliveries, orders, outcomes, payments
from tasks.storage.uow import UnitOfWork
from worker.tooling.bench.bare import BARE_PROVIDER
from worker.tooling.bench.events import (
    AMOUNT,
    CURRENCY,
    Post,
    StripeEvents,
    charge_of,
    intent_of,
    signed,
)
from worker.tooling.bench.load import LoadResult, closed_loop, paced, percentile
from worker.tooling.bench.stack import EMPTY_TASK, BenchError, Stack, Worker

Advance = Callable[[int], None]
STORE_BATCH = 500


class Progress(Protocol):
    def step(self, description: str, total: int) -> AbstractContextManager[Advance]: ...


@dataclass(frozen=True)
class Sizes:
    """How many of each thing one repetition sends; `scaled` shrinks them all at once."""

    events: int  # end to end: K unique events for K payments
    drain: int  # empty tasks
    confirm: int  # confirmation transactions straight on PostgreSQL
    receiver: int  # deliveries to the bare endpoint, then to the receiver
    duplicates: int  # deliveries of `duplicate_events` events
    duplicate_events: int
    hot: int  # distinct events for one payment
    lag: int  # events at half the end-to-end rate
    scaling: int  # events per worker-process count

    @classmethod
    def scaled(cls, events: int, scale: float) -> Sizes:
        def size(full: float, least: int) -> int:
            return max(least, round(full * scale))

        duplicates = size(5000, 100)
        return cls(
            events=size(events, 20),
            drain=size(events, 20),
            confirm=size(5000, 16),
            receiver=size(5000, 32),
            duplicates=duplicates,
            duplicate_events=max(1, round(duplicates / 100)),  # 100 copies of each event
            hot=size(1000, 20),
            lag=size(events / 4, 20),
            scaling=size(events / 2, 20),
        )


@dataclass(frozen=True)
class Expected:
    """Outcomes (by `kind/reason`) that the deliveries with ids in [first, last] must have."""

    phase: str
    first: int
    last: int
    counts: dict[str, int]


@dataclass
class Phases:
    stack: Stack
    engine: Engine
    progress: Progress
    sizes: Sizes
    connections: int
    confirm_threads: int
    timeout_s: float
    round_tag: str  # keeps the references and event ids of each repetition apart
    events: StripeEvents = field(default_factory=StripeEvents)
    expected: list[Expected] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    resent: dict[str, int] = field(default_factory=dict)  # sent again after a dropped connection

    # ---------------------------------------------------------------- ceilings

    def drain(self, worker: Worker) -> float:
        """Empty tasks per second: publish N with the worker paused, time resume -> all acked."""
        n = self.sizes.drain
        before = self.stack.executed(worker, EMPTY_TASK)
        self.stack.pause(worker)
        app = self.stack.app
        with (
            self.progress.step("publishing empty tasks", n) as advance,
            app.producer_or_acquire() as producer,
        ):
            for _ in range(n):
                app.send_task(EMPTY_TASK, producer=producer)
                advance(1)
        with self.progress.step(f"draining {n} empty tasks", n) as advance:
            started = time.perf_counter()
            self.stack.resume(worker)
            done = 0
            deadline = started + self.timeout_s
            while True:
                empty, waiting = self.stack.queue_empty()
                advance(n - waiting - done)
                done = n - waiting
                if empty:
                    break
                self._bounded(deadline, "the empty tasks to drain")
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
        ran = self.stack.executed(worker, EMPTY_TASK) - before
        if ran != n:  # e.g. refused as unregistered: that drains too, without running anything
            raise BenchError(f"the worker ran {ran} of {n} empty tasks; see {worker.service.log}")
        return n / elapsed

    def confirm_ceiling(self) -> float:
        """process_delivery over stored deliveries, from `confirm_threads` threads, per second."""
        refs = self._refs("confirm", self.sizes.confirm)
        self._register(refs)
        ids = self._store(self._unique_bodies(refs))
        policy = RetryPolicy()
        with self.progress.step(
            f"confirming {len(ids)} on PostgreSQL, {self.confirm_threads} threads", len(ids)
        ) as advance:

            def confirm(chunk: Sequence[int]) -> None:
                for delivery_id in chunk:
                    process_delivery(
                        delivery_id, UnitOfWork(self.engine), datetime.now(UTC), policy
                    )
                    advance(1)

            threads = self.confirm_threads
            with ThreadPoolExecutor(threads, thread_name_prefix="confirm") as pool:
                started = time.perf_counter()
                list(pool.map(confirm, [ids[i::threads] for i in range(threads)]))
                elapsed = time.perf_counter() - started
        self._expect("confirm ceiling", ids, {"applied": len(ids)})
        return len(ids) / elapsed

    def bare(self, base_url: str) -> LoadResult:
        """The bare insert endpoint under the same load as the receiver; its rows go again."""
        refs = self._refs("bare", self.sizes.receiver)
        posts = self._signed(self._unique_bodies(refs))
        result = self._load("bare insert endpoint", base_url, posts)
        with self.engine.begin() as conn:
            conn.execute(delete(deliveries).where(deliveries.c.provider == BARE_PROVIDER))
        return result

    # ---------------------------------------------------------------- payhook

    def receiver(self, base_url: str, worker: Worker) -> tuple[LoadResult, float]:
        """The receiver with the worker paused, then the rate at which the backlog is processed."""
        refs = self._refs("unique", self.sizes.receiver)
        self._register(refs)
        posts = self._signed(self._unique_bodies(refs))
        self.stack.pause(worker)
        result = self._load("receiver", base_url, posts)
        rate = self._process_backlog("unique", worker, result, {"applied": result.accepted})
        return result, rate

    def duplicates(self, base_url: str, worker: Worker) -> float:
        """Processing rate of many copies of few events, delivered interleaved."""
        n, events = self.sizes.duplicates, self.sizes.duplicate_events
        refs = self._refs("dup", events)
        self._register(refs)
        once = self._signed(self._unique_bodies(refs))
        posts = [once[i % events] for i in range(n)]
        self.stack.pause(worker)
        result = self._load(f"{n} deliveries of {events} events", base_url, posts)
        counts = {"applied": events, "acknowledged_duplicate/same_event": result.accepted - events}
        return self._process_backlog("duplicates", worker, result, counts)

    def hot_payment(self, base_url: str, worker: Worker) -> float:
        """Processing rate of distinct events that all confirm one payment: lock contention."""
        n = self.sizes.hot
        (ref,) = self._refs("hot", 1)
        self._register([ref])
        intent, charge = intent_of(ref), charge_of(ref)
        bodies = [
            (self.events.intent_succeeded if i % 2 else self.events.charge_succeeded)(
                f"evt_{ref}_{i}", intent, charge
            )
            for i in range(n)
        ]
        self.stack.pause(worker)
        result = self._load(f"{n} events for one payment", base_url, self._signed(bodies))
        counts = {
            "applied": 1,
            "acknowledged_duplicate/already_in_state": result.accepted - 1,
        }
        return self._process_backlog("hot payment", worker, result, counts)

    def end_to_end(
        self, base_url: str, n: int, what: str = "end to end"
    ) -> tuple[float, LoadResult]:
        """Unique events for registered payments, workers running: first POST to last outcome."""
        refs = self._refs(what.replace(" ", "-"), n)
        self._register(refs)
        posts = self._signed(self._unique_bodies(refs))
        base = self._last_outcome_id()
        result = self._load(what, base_url, posts)
        finished = self._wait_outcomes(base, result.accepted, f"{what}: outcomes")
        self._expect(what, result.delivery_ids, {"applied": result.accepted})
        return result.accepted / (finished - result.started), result

    def lag(self, base_url: str, rate: float) -> tuple[float, float, float]:
        """(offered rate, p50, p99 of recorded_at - received_at in ms) at a steady `rate`."""
        refs = self._refs("lag", self.sizes.lag)
        self._register(refs)
        posts = self._signed(self._unique_bodies(refs))
        base = self._last_outcome_id()
        with self.progress.step(f"steady load at {rate:.0f}/s", len(posts)) as advance:
            result = paced(base_url, posts, self.connections, rate, advance)
        self._check_refused("steady load", result)
        self._wait_outcomes(base, result.accepted, "steady load: outcomes")
        self._expect("steady load", result.delivery_ids, {"applied": result.accepted})
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.received_at, outcomes.c.recorded_at)
                .select_from(deliveries.join(outcomes, outcomes.c.delivery_id == deliveries.c.id))
                .where(deliveries.c.id.between(min(result.delivery_ids), max(result.delivery_ids)))
            ).all()
        lags = [max(0.0, (row.recorded_at - row.received_at).total_seconds()) for row in rows]
        return result.rate, percentile(lags, 50) * 1000, percentile(lags, 99) * 1000

    # ---------------------------------------------------------------- plumbing

    def _process_backlog(
        self, what: str, worker: Worker, result: LoadResult, counts: dict[str, int]
    ) -> float:
        base = self._last_outcome_id()
        started = time.perf_counter()
        self.stack.resume(worker)
        finished = self._wait_outcomes(base, result.accepted, f"{what}: processing the backlog")
        self._expect(what, result.delivery_ids, counts)
        return result.accepted / (finished - started)

    def _load(self, what: str, base_url: str, posts: Sequence[Post]) -> LoadResult:
        with self.progress.step(f"{what}: {self.connections} connections", len(posts)) as advance:
            result = closed_loop(base_url, posts, self.connections, advance)
        self._check_refused(what, result)
        return result

    def _check_refused(self, what: str, result: LoadResult) -> None:
        if result.resent:
            self.resent[what] = self.resent.get(what, 0) + result.resent
        for answer, count in result.refused.items():
            self.refused[f"{what}: {answer}"] = self.refused.get(f"{what}: {answer}", 0) + count
        if not result.accepted:
            raise BenchError(f"{what}: no request was accepted ({dict(result.refused)})")

    def _wait_outcomes(self, base: int, expected: int, what: str) -> float:
        """Wait until `expected` outcomes have been recorded after outcome id `base`."""
        started = time.perf_counter()
        deadline = started + self.timeout_s
        with self.progress.step(what, expected) as advance:
            done = 0
            while True:
                with self.engine.connect() as conn:
                    count = conn.execute(
                        select(func.count()).select_from(outcomes).where(outcomes.c.id > base)
                    ).scalar_one()
                advance(count - done)
                done = count
                if done >= expected:
                    return time.perf_counter()
                self.stack.check_alive()
                self._bounded(deadline, f"{expected} outcomes ({done} so far)")
                # Poll often near the end, rarely while the count is far off: the query costs
                # PostgreSQL time that the workers would rather have.
                pace = done / max(time.perf_counter() - started, 1e-3)
                time.sleep(min(0.25, max(0.01, (expected - done) / max(pace, 1.0) / 8)))

    def _bounded(self, deadline: float, what: str) -> None:
        if time.perf_counter() > deadline:
            raise BenchError(
                f"gave up waiting for {what} after {self.timeout_s:.0f} s; logs in "
                f"{self.stack.logs}"
            )

    def _last_outcome_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(outcomes.c.id), 0))).scalar_one())

    def _expect(self, phase: str, delivery_ids: Sequence[int], counts: dict[str, int]) -> None:
        if delivery_ids:
            wanted = {k: v for k, v in counts.items() if v}
            self.expected.append(Expected(phase, min(delivery_ids), max(delivery_ids), wanted))

    def _refs(self, phase: str, n: int) -> list[str]:
        return [f"{self.round_tag}{phase}{i}" for i in range(n)]

    def _unique_bodies(self, refs: Sequence[str]) -> list[bytes]:
        return [
            self.events.intent_succeeded(f"evt_{ref}", intent_of(ref), charge_of(ref))
            for ref in refs
        ]

    def _signed(self, bodies: Sequence[bytes]) -> list[Post]:
        return signed(bodies, self.stack.stripe_secret, int(time.time()))

    def _register(self, refs: Sequence[str]) -> None:
        """Orders and their pending payments, one each, straight into the tables (untimed)."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            order_ids = conn.execute(
                insert(orders).returning(orders.c.id, sort_by_parameter_order=True),
                [
                    {
                        "reference": f"order-{ref}",
                        "total": AMOUNT,
                        "currency": CURRENCY,
                        "paid_amount": 0,
                        "refunded_amount": 0,
                        "created_at": now,
                    }
                    for ref in refs
                ],
            ).scalars()
            conn.execute(
                insert(payments),
                [
                    {
                        "order_id": order_id,
                        "provider": stripe.PROVIDER,
                        "provider_reference": intent_of(ref),
                        "amount": AMOUNT,
                        "currency": CURRENCY,
                        "state": PaymentState.PENDING.value,
                        "refunded_amount": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for ref, order_id in zip(refs, list(order_ids), strict=True)
                ],
            )

    def _store(self, bodies: Sequence[bytes]) -> list[int]:
        """Deliveries stored as the receiver would, without HTTP (untimed)."""
        headers = json.dumps({"content-type": "application/json; charset=utf-8"})
        ids: list[int] = []
        for chunk in _chunks(bodies, STORE_BATCH):
            items = [(stripe.parse(body), headers, body) for body in chunk]
            ids += store_deliveries(UnitOfWork(self.engine), items, received_at=datetime.now(UTC))
        return ids


def _chunks(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
