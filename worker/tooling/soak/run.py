"""`payhook soak`, the run: a stack of its own, faults on a schedule, every invariant at the end.

What it does, as `payhook soak --help` tells it, is `worker.cli.soak_args.DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, text

from tasks import migrate as migrations
from tasks.storage.engine import make_engine
from worker.settings import Settings
from worker.signing.stripe import sign_stripe
from worker.tooling.host_endpoint import HostEndpoint
from worker.tooling.invariants import Findings, Told, check, check_notifications
from worker.tooling.servers import PrivatePostgres, PrivateRedis, ServerError
from worker.tooling.soak.plan import Plan, PlannedPayment, Registration, make_plan
from worker.tooling.soak.servers import (
    SOAK_DATABASE,
    SoakError,
    flush_redis,
    fresh_database,
    require_loopback,
)
from worker.tooling.stack import Stack, StackError

# The sweeper re-publishes what a restarted Redis or a killed worker lost, soon: it tells a
# lost message from one merely queued behind the backlog the soak builds up.
SWEEP_AFTER_S = 5
SWEEP_INTERVAL_S = 2
MAX_SWEEPS = 5
# The "backlog" fault stops the worker for longer than the whole sweep budget.
BACKLOG_STOP_S = MAX_SWEEPS * SWEEP_AFTER_S + 10
SEND_ATTEMPTS = 120  # a provider retries a refused delivery; so does the soak, 0.5 s apart
READY_TIMEOUT_S = 90
NOTIFY_TIMEOUT_S = 120  # after the last outcome, for the relay to catch up


@dataclass(frozen=True)
class SoakOptions:
    deliveries: int
    concurrency: int
    workers: int
    faults: bool
    private_servers: bool
    database_url: str
    redis_url: str
    grace_s: int
    timeout_s: int
    seed: int


def soak_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    console = Console()
    if not console.is_terminal:  # a file or a pipe: keep each summary line on one line
        console = Console(width=140)
    return run_soak(settings, options_from(args), console)


def options_from(args: argparse.Namespace) -> SoakOptions:
    return SoakOptions(
        deliveries=args.deliveries,
        concurrency=args.concurrency,
        workers=args.workers,
        faults=args.faults,
        private_servers=args.private_servers,
        database_url=args.database_url,
        redis_url=args.redis_url,
        grace_s=args.grace,
        timeout_s=args.timeout,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31),
    )


def run_soak(settings: Settings, options: SoakOptions, console: Console) -> int:
    folder = (settings.data_dir / "soak").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        with ExitStack() as cleanup:
            return _Soak(options, folder, console, cleanup).run()
    except (SoakError, ServerError) as error:
        console.print(f"[red]payhook soak: {error}[/red] (logs in {folder})")
        return 2


@dataclass
class _Sent:
    accepted: set[int] = field(default_factory=set)  # delivery ids answered 202
    answers: Counter[str] = field(default_factory=Counter)  # final answer per delivery
    refused_attempts: int = 0  # 503s and dropped connections, each retried
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Soak:
    def __init__(
        self, options: SoakOptions, folder: Path, console: Console, cleanup: ExitStack
    ) -> None:
        self.options = options
        self.folder = folder
        self.console = console
        self.cleanup = cleanup
        self.rng = random.Random(options.seed)
        self.stripe_secret = "whsec_" + secrets.token_hex(16)
        self.token = secrets.token_urlsafe(32)
        self.sent = _Sent()
        self.faults: list[str] = []
        self.skipped_faults: str | None = None
        self.started = self.sending_started = time.monotonic()
        self.last_recorded = 0
        self.host = HostEndpoint(
            "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        ).start()
        cleanup.callback(self.host.stop)

    def run(self) -> int:
        o = self.options
        postgres, redis_server = self._servers()
        database_url = postgres.url(SOAK_DATABASE) if postgres else o.database_url
        redis_url = redis_server.url if redis_server else o.redis_url
        self.console.print(
            f"[bold]payhook soak[/bold]: {o.deliveries} deliveries, {o.workers} worker "
            f"processes, {o.concurrency} senders, faults {'on' if o.faults else 'off'}, "
            f"seed {o.seed}; logs in {self.folder}"
        )
        fresh_database(database_url)
        migrations.upgrade(database_url)
        flush_redis(redis_url)
        plan = make_plan(o.deliveries, self.rng)
        stack = _Stack(self._env(database_url, redis_url), self.folder, o.workers)
        self.cleanup.callback(stack.stop)
        stack.start_all()
        engine = make_engine(database_url, pool_size=2)
        self.cleanup.callback(engine.dispose)
        schedule = self._schedule(stack, postgres, redis_server)

        with httpx.Client(
            base_url=stack.base_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
            limits=httpx.Limits(max_connections=o.concurrency + 4),
        ) as client:
            stack.wait_all_ready()
            self.sending_started = time.monotonic()
            self._register(client, plan, Registration.UPFRONT)
            # Faults fall due on the share of work done, sending and processing together, so
            # that they strike while deliveries arrive and while the worker catches up.
            total = 2 * len(plan.bodies)
            faults = _FaultThread(
                schedule, lambda: (self.sent.done + self._recorded(engine)) / total, self
            )
            with self._progress() as progress:
                faults.start()
                self._send(client, plan, progress)
                waited = self._wait_for_outcomes(engine, stack, progress, faults)
                faults.finish()
            statuses = self._order_statuses(client, plan)
            self._wait_for_notifications(client)
        with engine.connect() as conn:
            findings = check(conn, self.sent.accepted, statuses)
            told = check_notifications(
                conn,
                [
                    (
                        r.message_id,
                        r.body["data"]["order_reference"],
                        r.body["data"]["order_sequence"],
                    )
                    for r in self.host.distinct()
                ],
            )
        return self._summary(plan, findings, waited, told)

    # ---------------------------------------------------------------- setting up

    def _servers(self) -> tuple[PrivatePostgres | None, PrivateRedis | None]:
        if not self.options.private_servers:
            require_loopback(self.options.database_url, "the soak's PostgreSQL")
            require_loopback(self.options.redis_url, "the soak's Redis")
            if self.options.faults:
                self.skipped_faults = (
                    "PostgreSQL and Redis restarts skipped: payhook soak restarts only servers "
                    "it started itself (run it with --private-servers)"
                )
            return None, None
        private = Path(tempfile.mkdtemp(prefix="payhook-soak-"))
        private.chmod(0o711)  # the postgres OS user must reach its folder inside
        self.cleanup.callback(shutil.rmtree, private, ignore_errors=True)
        postgres = PrivatePostgres(private / "postgresql")
        redis_server = PrivateRedis(private / "redis")
        self.cleanup.callback(postgres.destroy)
        self.cleanup.callback(redis_server.stop)
        with self.console.status("starting a private PostgreSQL cluster and Redis …"):
            postgres.start()
            redis_server.start()
        return postgres, redis_server

    def _env(self, database_url: str, redis_url: str) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")},
            "PAYHOOK_DATA_DIR": str(self.folder),
            "PAYHOOK_DATABASE_URL": database_url,
            "PAYHOOK_BROKER_URL": redis_url,
            "PAYHOOK_API_TOKEN": self.token,
            "PAYHOOK_STRIPE_WEBHOOK_SECRETS": self.stripe_secret,
            "PAYHOOK_UNMATCHED_GRACE_S": str(self.options.grace_s),
            "PAYHOOK_SWEEP_AFTER_S": str(SWEEP_AFTER_S),
            "PAYHOOK_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
            "PAYHOOK_MAX_SWEEPS": str(MAX_SWEEPS),
            # A host endpoint of the soak's own, told of every applied state change.
            "PAYHOOK_NOTIFY_URL": self.host.url,
            "PAYHOOK_NOTIFY_SECRET": self.host.secret,
            "PAYHOOK_NOTIFY_INTERVAL_S": "1",
        }

    def _schedule(
        self, stack: _Stack, postgres: PrivatePostgres | None, redis_server: PrivateRedis | None
    ) -> list[tuple[float, Callable[[], str]]]:
        """(share of the work done, fault) pairs, in order."""
        if not self.options.faults:
            return []
        schedule: list[tuple[float, Callable[[], str]]] = [
            (0.08, lambda: stack.kill_worker_child(self.rng)),
            (0.35, stack.kill_worker),
            (0.45, lambda: stack.stop_worker_for(BACKLOG_STOP_S)),
            (0.65, lambda: stack.kill_worker_child(self.rng)),
            (0.80, stack.kill_worker),
        ]
        if redis_server is not None:
            schedule.append((0.20, lambda: _restart_redis(redis_server)))
        if postgres is not None:
            schedule.append((0.50, lambda: _restart_postgres(postgres)))
        return sorted(schedule, key=lambda item: item[0])

    def _register(self, client: httpx.Client, plan: Plan, when: Registration) -> None:
        chosen = [p for p in plan.payments if p.registration is when]

        def register(payment: PlannedPayment) -> None:
            order = {"reference": payment.order, "total": payment.amount, "currency": "usd"}
            _api(client, "/api/orders", order)
            _api(
                client,
                "/api/payments",
                {
                    "order_reference": payment.order,
                    "provider": "stripe",
                    "provider_reference": payment.intent,
                    "amount": payment.amount,
                    "currency": "usd",
                },
            )

        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            list(pool.map(register, chosen))

    # ---------------------------------------------------------------- sending and waiting

    @contextmanager
    def _progress(self) -> Iterator[Progress]:
        with Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            yield progress

    def _send(self, client: httpx.Client, plan: Plan, progress: Progress) -> None:
        bar = progress.add_task("sending", total=len(plan.bodies))
        half = len(plan.bodies) // 2

        def send(body: bytes) -> None:
            answer = self._deliver(client, body)
            with self.sent.lock:
                self.sent.answers[answer] += 1
                self.sent.done += 1
            progress.advance(bar)

        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            list(pool.map(send, plan.bodies[:half]))
            # The host registers these payments only now: their early webhooks had to wait.
            self._register(client, plan, Registration.LATE)
            list(pool.map(send, plan.bodies[half:]))

    def _deliver(self, client: httpx.Client, body: bytes) -> str:
        """POST one delivery; retry (as Stripe would) while the receiver cannot take it."""
        answer = "no answer"
        for _ in range(SEND_ATTEMPTS):
            signature = sign_stripe(body, self.stripe_secret, int(time.time()))
            try:
                response = client.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
                )
            except httpx.TransportError:
                answer = "no answer"
            else:
                answer = str(response.status_code)
                if response.status_code == 202:
                    with self.sent.lock:
                        self.sent.accepted.add(int(response.json()["delivery_id"]))
                    return answer
                if response.status_code < 500:
                    return answer  # refused for good: counted, never retried
            with self.sent.lock:
                self.sent.refused_attempts += 1
            time.sleep(0.5)
        return answer

    def _recorded(self, engine: Engine) -> int:
        counts = _counts(engine)
        if counts is not None:
            self.last_recorded = counts[1]
        return self.last_recorded

    def _wait_for_outcomes(
        self, engine: Engine, stack: _Stack, progress: Progress, faults: _FaultThread
    ) -> float:
        """Seconds waited until every stored delivery had its outcome and every fault had
        struck (bounded)."""
        started = time.monotonic()
        total = len(self.sent.accepted)
        bar = progress.add_task("outcomes", total=total)
        deadline = started + self.options.timeout_s
        while time.monotonic() < deadline:
            counts = _counts(engine)
            if counts is not None:
                stored, recorded = counts
                progress.update(bar, total=max(total, stored), completed=recorded)
                if recorded >= stored >= total and not faults.is_alive():
                    break
            stack.check_alive()
            time.sleep(0.5)
        return time.monotonic() - started

    def _order_statuses(self, client: httpx.Client, plan: Plan) -> dict[str, str]:
        registered = [p for p in plan.payments if p.registration is not Registration.NEVER]

        def status(payment: PlannedPayment) -> tuple[str, str]:
            answer = client.get(f"/api/orders/{payment.order}")
            answer.raise_for_status()
            return payment.order, str(answer.json()["status"])

        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            return dict(pool.map(status, registered))

    # ---------------------------------------------------------------- the summary

    def note_fault(self, description: str) -> None:
        at = time.monotonic() - self.sending_started
        self.faults.append(f"{at:6.1f}s  {description}")

    def _wait_for_notifications(self, client: httpx.Client) -> None:
        """Until the host endpoint has every notification the feed lists (bounded)."""
        deadline = time.monotonic() + NOTIFY_TIMEOUT_S
        while time.monotonic() < deadline:
            listed: set[str] = set()
            after = 0
            while True:
                page = client.get("/api/events", params={"after": after, "limit": 1000}).json()
                listed |= {str(event["id"]) for event in page}
                if len(page) < 1000:
                    break
                after = page[-1]["id"]
            if listed <= {r.message_id for r in self.host.distinct()}:
                return
            time.sleep(0.5)

    def _summary(self, plan: Plan, found: Findings, waited: float, told: Told) -> int:
        o, sent = self.options, self.sent
        failures = found.failures() + told.failures()
        if found.outcomes < found.deliveries:
            failures.append(f"outcomes still missing after waiting {o.timeout_s}s")
        refused = {a: n for a, n in sent.answers.items() if a != "202"}
        lines = [
            "",
            "[bold]payhook soak summary[/bold]",
            f"  deliveries sent      {len(plan.bodies)} ({plan.distinct_events} distinct "
            f"events, {len(plan.bodies) - plan.distinct_events} copies, "
            f"{len(plan.payments)} payments, seed {o.seed})",
            f"  accepted             {len(sent.accepted)} answered 202"
            + (f"; refused for good: {refused}" if refused else "")
            + f"; {sent.refused_attempts} attempts retried (503 or no answer)",
            f"  stored deliveries    {found.deliveries}, outcomes {found.outcomes}",
            "  outcomes by kind",
            *(f"    {kind:<44} {n}" for kind, n in sorted(found.by_kind.items())),
            f"  faults injected      {len(self.faults)}",
            *(f"    {line}" for line in self.faults),
        ]
        if self.skipped_faults:
            lines.append(f"    {self.skipped_faults}")
        lines += [
            f"  lost                 {len(found.lost)}",
            f"  applied twice        {len(found.applied_twice)}",
            f"  dead                 {len(found.dead)}",
            f"  notifications        {told.notifications} in the outbox, {told.received} "
            f"received and verified by the host endpoint, {len(told.missing)} missing",
            f"  time taken           {time.monotonic() - self.started:.1f}s "
            f"(waited {waited:.1f}s for outcomes after sending)",
        ]
        if failures:
            lines.append("[bold red]  invariants FAILED[/bold red]")
            lines += [f"    {line}" for line in failures]
        else:
            lines.append(
                "[bold green]  invariants hold[/bold green]: one outcome per delivery, no "
                "payment confirmed twice, refunds within amounts, orders match their sums, "
                "one notification per applied change, each received, in sequence per order"
            )
        for line in lines:
            self.console.print(line, highlight=False)
        return 1 if failures else 0


class _FaultThread(threading.Thread):
    """Runs each fault once the share of deliveries sent passes its mark."""

    def __init__(
        self,
        schedule: list[tuple[float, Callable[[], str]]],
        progress: Callable[[], float],
        soak: _Soak,
    ) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.schedule = list(schedule)
        self.progress = progress
        self.soak = soak
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for mark, fault in self.schedule:
                while self.progress() < mark:
                    if self.stop.wait(0.5):
                        return
                self.soak.note_fault(fault())
                self.soak.console.print(f"  fault: {self.soak.faults[-1].strip()}")
        except BaseException as error:  # noqa: BLE001  (re-raised in the main thread)
            self.error = error

    def finish(self) -> None:
        """Stop waiting for marks not reached (the soak timed out); let a fault that is
        striking finish; raise what a fault raised."""
        self.stop.set()
        self.join(timeout=2 * READY_TIMEOUT_S)
        if self.error is not None:
            raise self.error


class _Stack(Stack):
    """The harness's stack (worker/tooling/stack.py): `payhook serve`, `payhook beat` and a
    worker whose faults replace it; each logs to a file in the soak's folder."""

    def __init__(self, env: dict[str, str], folder: Path, workers: int) -> None:
        super().__init__(env, folder)
        self.workers = workers
        self.worker_starts = 0
        self.restarting = threading.Lock()  # held while a fault replaces the worker

    def start_all(self) -> None:
        self.start_receiver()
        self.start_beat()
        self._start_worker()

    def _start_worker(self) -> None:
        self.worker_starts += 1
        self.start_worker(concurrency=self.workers, node=f"soak{self.worker_starts}")

    def wait_all_ready(self) -> None:
        try:
            self.wait_ready(timeout=READY_TIMEOUT_S)
        except StackError as error:
            raise SoakError(str(error)) from None

    def kill_worker_child(self, rng: random.Random) -> str:
        victim = self.kill_child("worker", rng)
        if victim is None:
            return "no worker child to kill (the pool was restarting)"
        return f"SIGKILL to worker child {victim} (the worker starts another)"

    def kill_worker(self) -> str:
        with self.restarting:
            old = self.kill("worker")
            self._start_worker()
        self._wait_worker_ready()
        return f"SIGKILL to the whole worker {old} and its pool, then started it again"

    def stop_worker_for(self, seconds: float) -> str:
        """The backlog fault: a warm stop of the worker, deliveries queue up for `seconds`
        (longer than the sweep budget), then a worker again."""
        with self.restarting:
            old = self.named["worker"].pid
            self.terminate("worker")
            time.sleep(seconds)
            self._start_worker()
        self._wait_worker_ready()
        return f"backlog: worker {old} stopped (SIGTERM) for {seconds:.0f}s, then started again"

    def _wait_worker_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready("worker"):
            if time.monotonic() > deadline:
                raise SoakError(f"the restarted worker was not ready within {READY_TIMEOUT_S}s")
            self.check_alive()
            time.sleep(0.2)

    def check_alive(self) -> None:
        if not self.restarting.acquire(blocking=False):
            return  # a fault is replacing the worker right now
        try:
            super().check_alive()
        except StackError as error:
            raise SoakError(str(error)) from None
        finally:
            self.restarting.release()


def _counts(engine: Engine) -> tuple[int, int] | None:
    """(deliveries stored, outcomes recorded), or None while the database is unreachable."""
    try:
        with engine.connect() as conn:
            stored = int(conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one())
            recorded = int(conn.execute(text("SELECT count(*) FROM outcomes")).scalar_one())
    except Exception:  # noqa: BLE001  (the database may be restarting: look again shortly)
        return None
    return stored, recorded


def _api(client: httpx.Client, path: str, payload: dict[str, object]) -> None:
    for _ in range(SEND_ATTEMPTS):
        try:
            answer = client.post(path, json=payload)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if answer.status_code < 500:
            answer.raise_for_status()
            return
        time.sleep(0.5)
    raise SoakError(f"POST {path} kept failing")


def _restart_redis(server: PrivateRedis) -> str:
    server.restart(kill=True)
    return f"Redis restarted (SIGKILL, no persistence: queued messages lost), port {server.port}"


def _restart_postgres(server: PrivatePostgres) -> str:
    # Immediate: no checkpoint, open connections cut, crash recovery at the next start.
    server.restart("immediate")
    return f"PostgreSQL restarted (immediate stop, crash recovery), port {server.port}"
