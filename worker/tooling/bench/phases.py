"""The measurements of `payhook bench`, one method each, run the same way on either side.

Every phase sends pre-signed Stripe deliveries with wrk and reads CPU time from /proc over its
window; every wait is bounded. Figures come back as a flat dict of `metric -> value`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from worker.tooling.bench.cpu import Meter, descendants
from worker.tooling.bench.events import Post, StripeEvents, charge_of, intent_of, signed
from worker.tooling.bench.reference.tasks import EMPTY as EMPTY_TASK
from worker.tooling.bench.sides import Side
from worker.tooling.bench.stack import BenchError, Stack, Worker
from worker.tooling.bench.wrk import WrkMissing, WrkResult, run_wrk
from worker.tooling.processes import children

# The processes whose CPU is counted, in the order of the table; the load generator apart.
GROUPS = ("receiver", "worker_main", "worker_children", "pg_receiver", "pg_worker", "redis")
MACHINE = GROUPS  # everything but the load generator
Say = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    """How many of each thing one round sends; `scaled` shrinks them all at once."""

    unique: int  # unique events for as many payments, backlog
    duplicates: int  # deliveries of `duplicate_events` events
    duplicate_events: int
    hot: int  # distinct events confirming one payment
    end_to_end: int
    lag: int  # events at half the end-to-end rate
    drain: int  # empty tasks

    @classmethod
    def scaled(cls, events: int, scale: float) -> Sizes:
        def size(full: float, least: int) -> int:
            return max(least, round(full * scale))

        duplicates = size(events, 100)
        return cls(
            unique=size(events, 20),
            duplicates=duplicates,
            duplicate_events=max(1, round(duplicates / 100)),  # 100 copies of each event
            hot=size(events / 5, 20),
            end_to_end=size(events, 20),
            lag=size(events / 4, 20),
            drain=size(events, 20),
        )


@dataclass(frozen=True)
class Expected:
    """Outcomes (by `kind/reason`) that the deliveries with ids in [first, last] must have."""

    side: str
    phase: str
    first: int
    last: int
    counts: dict[str, int]


@dataclass
class Phases:
    stack: Stack
    engine: Engine  # the benchmark's own connections (never counted)
    sizes: Sizes
    connections: int
    timeout_s: float
    round_tag: str  # keeps the references and event ids of each round apart
    say: Say
    events: StripeEvents = field(default_factory=StripeEvents)
    expected: list[Expected] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- phases

    def backlog(self, side: Side, phase: str) -> dict[str, float]:
        """Deliveries received with the worker paused, then the backlog processed: rates and
        CPU per delivery of both windows (the receiver's in the first, the worker's in the
        second), and the PostgreSQL connections the receiver opened meanwhile."""
        posts, counts = self._posts(side, phase)
        self.stack.pause(side.worker)
        first = side.last_delivery_id() + 1
        sessions = self._sessions()
        meter = self._meter(side)
        meter.start()
        load = self._send(side, phase, posts)
        received = meter.stop()
        opened = self._sessions() - sessions
        last = side.last_delivery_id()
        accepted = last - first + 1
        self._check_all_stored(side, phase, len(posts), accepted, load)
        meter.start()
        started = time.perf_counter()
        self.stack.resume(side.worker)
        finished = self._wait_outcomes(side, first, last, phase)
        processed = meter.stop()
        self._expect(side, phase, first, last, counts(accepted))
        figures = {
            "received_per_s": accepted / load.seconds,
            "processed_per_s": accepted / (finished - started),
            "receive_p50_ms": load.p50_ms,
            "receive_p99_ms": load.p99_ms,
            "connections_opened": float(opened),
            "cpu_ms.load": load.cpu_s * 1000 / accepted,
        }
        for group in GROUPS:
            spent = received[group] + processed[group]
            figures[f"cpu_ms.{group}"] = spent * 1000 / accepted
            figures[f"cpu_ms.receive.{group}"] = received[group] * 1000 / accepted
            figures[f"cpu_ms.process.{group}"] = processed[group] * 1000 / accepted
        return _totals(figures)

    def end_to_end(self, side: Side) -> dict[str, float]:
        """Unique events, worker running: first POST to last outcome, CPU over that window."""
        posts, counts = self._posts(side, "end-to-end")
        first = side.last_delivery_id() + 1
        sessions = self._sessions()
        meter = self._meter(side)
        meter.start()
        load = self._send(side, "end to end", posts)
        last = side.last_delivery_id()
        accepted = last - first + 1
        self._check_all_stored(side, "end to end", len(posts), accepted, load)
        finished = self._wait_outcomes(side, first, last, "end to end")
        spent = meter.stop()
        opened = self._sessions() - sessions
        self._expect(side, "end to end", first, last, counts(accepted))
        figures = {
            "per_s": accepted / (finished - load.started),
            "receive_p99_ms": load.p99_ms,
            "connections_opened": float(opened),
            "cpu_ms.load": load.cpu_s * 1000 / accepted,
        }
        figures |= {f"cpu_ms.{g}": spent[g] * 1000 / accepted for g in GROUPS}
        return _totals(figures)

    def lag(self, side: Side, rate: float) -> dict[str, float]:
        """Receive-to-outcome lag p50/p99 (ms) at a steady offered `rate`."""
        posts, counts = self._posts(side, "lag")
        first = side.last_delivery_id() + 1
        load = self._send(side, f"steady load at {rate:.0f}/s", posts, rate=rate)
        last = side.last_delivery_id()
        accepted = last - first + 1
        self._check_all_stored(side, "steady load", len(posts), accepted, load)
        self._wait_outcomes(side, first, last, "steady load")
        self._expect(side, "steady load", first, last, counts(accepted))
        lags = side.lags_s(first, last)
        return {
            "offered_per_s": accepted / load.seconds,
            "p50_ms": percentile(lags, 50) * 1000,
            "p99_ms": percentile(lags, 99) * 1000,
        }

    def drain(self, worker: Worker) -> dict[str, float]:
        """Empty tasks of the reference's Celery app: published while the worker is paused,
        then timed from resume to an empty queue; CPU per task of the worker and Redis."""
        n = self.sizes.drain
        self.stack.pause(worker)
        with self.stack.app.producer_or_acquire() as producer:
            for _ in range(n):
                self.stack.app.send_task(EMPTY_TASK, queue=worker.queue, producer=producer)
        self.say(f"draining {n} empty tasks")
        meter = Meter(
            groups={
                "worker_main": lambda: [worker.service.process.pid],
                "worker_children": lambda: children(worker.service.process.pid),
            },
            counters={"redis": self.stack.redis_cpu_s},
        )
        meter.start()
        started = time.perf_counter()
        self.stack.resume(worker)
        deadline = started + self.timeout_s
        while self.stack.queue_length(worker.queue):
            self._bounded(deadline, "the empty tasks to drain")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        spent = meter.stop()
        figures = {"per_s": n / elapsed}
        figures |= {f"cpu_ms.{group}": seconds * 1000 / n for group, seconds in spent.items()}
        figures["cpu_ms.worker"] = figures["cpu_ms.worker_main"] + figures["cpu_ms.worker_children"]
        return figures

    # ---------------------------------------------------------------- plumbing

    def _posts(self, side: Side, phase: str) -> tuple[list[Post], Callable[[int], dict[str, int]]]:
        """Signed deliveries for `phase` (payments registered) and the outcomes they must get."""
        sizes = self.sizes
        tag = f"{self.round_tag}{side.name[0]}-{phase}"
        if phase == "duplicates":
            n, events = sizes.duplicates, sizes.duplicate_events
            refs = [f"{tag}{i}" for i in range(events)]
            side.register(refs)
            once = self._signed(self._unique_bodies(refs))
            return [once[i % events] for i in range(n)], lambda accepted: {
                "applied": events,
                "acknowledged_duplicate/same_event": accepted - events,
            }
        if phase == "hot":
            ref = f"{tag}0"
            side.register([ref])
            intent, charge = intent_of(ref), charge_of(ref)
            bodies = [
                (self.events.intent_succeeded if i % 2 else self.events.charge_succeeded)(
                    f"evt_{ref}_{i}", intent, charge
                )
                for i in range(sizes.hot)
            ]
            return self._signed(bodies), lambda accepted: {
                "applied": 1,
                "acknowledged_duplicate/already_in_state": accepted - 1,
            }
        n = {"unique": sizes.unique, "lag": sizes.lag}.get(phase, sizes.end_to_end)
        refs = [f"{tag}{i}" for i in range(n)]
        side.register(refs)
        return self._signed(self._unique_bodies(refs)), lambda accepted: {"applied": accepted}

    def _send(
        self, side: Side, what: str, posts: Sequence[Post], *, rate: float | None = None
    ) -> WrkResult:
        self.say(f"{side.name}: {what}, {len(posts)} deliveries, {self.connections} connections")
        try:
            result = run_wrk(side.base_url, posts, self.connections, self.timeout_s, rate=rate)
        except WrkMissing as error:
            raise BenchError(str(error)) from None
        if result.non_2xx:
            key = f"{side.name} {what}: non-2xx answers"
            self.refused[key] = self.refused.get(key, 0) + result.non_2xx
        if result.socket_errors:
            key = f"{side.name} {what}: socket errors {result.errors}"
            self.refused[key] = self.refused.get(key, 0) + result.socket_errors
        return result

    def _check_all_stored(
        self, side: Side, what: str, sent: int, stored: int, load: WrkResult
    ) -> None:
        if stored != sent:
            raise BenchError(
                f"{side.name} {what}: {stored} of {sent} deliveries stored "
                f"({load.non_2xx} refused, socket errors {load.errors}); logs in {self.stack.logs}"
            )

    def _meter(self, side: Side) -> Meter:
        receiver_pid, worker_pid = side.receiver.process.pid, side.worker.service.process.pid
        receiver_app, worker_app = side.app_names
        return Meter(
            groups={
                "receiver": lambda: descendants(receiver_pid),
                "worker_main": lambda: [worker_pid],
                "worker_children": lambda: children(worker_pid),
                "pg_receiver": lambda: self._backends(receiver_app),
                "pg_worker": lambda: self._backends(worker_app),
            },
            counters={"redis": self.stack.redis_cpu_s},
        )

    def _backends(self, application_name: str) -> list[int]:
        """PostgreSQL backend pids serving the benchmark's database for one application."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": application_name},
            )
            return [int(row[0]) for row in rows]

    def _sessions(self) -> int:
        """Sessions ever opened to the benchmark's database (pg_stat_database, PostgreSQL 14+).

        Backends report their counters at most once a second: wait that long first.
        """
        time.sleep(1.1)
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            found = conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
            conn.rollback()
        return int(found)

    def _wait_outcomes(self, side: Side, first: int, last: int, what: str) -> float:
        """Wait until deliveries first..last all have outcomes; the time the last was seen."""
        expected = last - first + 1
        started = time.perf_counter()
        deadline = started + self.timeout_s
        while True:
            done = side.outcomes_between(first, last)
            if done >= expected:
                return time.perf_counter()
            self.stack.check_alive()
            self._bounded(deadline, f"{side.name} {what}: {expected} outcomes ({done} so far)")
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

    def _expect(
        self, side: Side, phase: str, first: int, last: int, counts: dict[str, int]
    ) -> None:
        wanted = {k: v for k, v in counts.items() if v}
        self.expected.append(Expected(side.name, phase, first, last, wanted))

    def _unique_bodies(self, refs: Sequence[str]) -> list[bytes]:
        return [
            self.events.intent_succeeded(f"evt_{ref}", intent_of(ref), charge_of(ref))
            for ref in refs
        ]

    def _signed(self, bodies: Sequence[bytes]) -> list[Post]:
        return signed(bodies, self.stack.stripe_secret, int(time.time()))


def _totals(figures: dict[str, float]) -> dict[str, float]:
    """Add the worker (main + children) and the machine (all but the load generator)."""
    for prefix in ("cpu_ms.", "cpu_ms.receive.", "cpu_ms.process."):
        if f"{prefix}worker_main" in figures:
            figures[f"{prefix}worker"] = (
                figures[f"{prefix}worker_main"] + figures[f"{prefix}worker_children"]
            )
            figures[f"{prefix}postgres"] = (
                figures[f"{prefix}pg_receiver"] + figures[f"{prefix}pg_worker"]
            )
            figures[f"{prefix}machine"] = sum(figures[f"{prefix}{g}"] for g in MACHINE)
    return figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (as `payhook stats` computes its lag); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]
