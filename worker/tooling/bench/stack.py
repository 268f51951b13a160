"""The stack `payhook bench` runs against: its own PostgreSQL database and Redis database on
loopback; `payhook serve` and `payhook worker`, and the reference design's receiver and worker,
as subprocesses. Each process's PostgreSQL connections carry an application name of its own
(libpq's PGAPPNAME), so that the benchmark can tell their backends apart."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tasks.migrate import upgrade
from worker.taskqueue.app import NOTIFY_QUEUE, QUEUE, SWEEP_QUEUE
from worker.tooling.bench.reference import schema
from worker.tooling.bench.reference.tasks import QUEUE as REFERENCE_QUEUE
from worker.tooling.processes import children, free_port
from worker.tooling.stack import Stack as ProcessStack
from worker.tooling.stack import StackError, payhook

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 5.0
APP_NAMES = {
    "payhook receiver": "bench-payhook-receiver",
    "payhook worker": "bench-payhook-worker",
    "reference receiver": "bench-reference-receiver",
    "reference worker": "bench-reference-worker",
}
BENCH_APP_NAME = "bench-monitor"  # the benchmark's own connections, never counted


class BenchError(Exception):
    """The benchmark cannot go on; the message is one line for the operator."""


def check_loopback(url: str, what: str) -> None:
    """payhook bench drops databases and floods servers: it only talks to this machine."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise BenchError(f"{what} must be on loopback (127.0.0.1, localhost or ::1), not {host!r}")


def create_database(url: str) -> None:
    """Drop and create the benchmark's own database, then migrate it."""
    name = database_name(url)
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(schema.TABLES)
    finally:
        engine.dispose()


def drop_database(url: str) -> None:
    name = database_name(url)
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    name = make_url(url).database or ""
    # A guard against pointing the benchmark at a database someone cares about.
    if "bench" not in name or '"' in name:
        raise BenchError(f"the benchmark database's name must contain 'bench', not {name!r}")
    return name


def _admin(url: str, *statements: str) -> None:
    """Run statements on the server's `postgres` database, outside a transaction."""
    admin = make_url(url).set(database="postgres")
    engine = create_engine(
        admin, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except OperationalError as error:
        shown = make_url(url).render_as_string(hide_password=True)
        raise BenchError(f"PostgreSQL at {shown} is not reachable: {error.orig}") from None
    finally:
        engine.dispose()


def flush_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis.RedisError as error:
        raise BenchError(f"Redis at {url} is not reachable: {error}") from None


@dataclass
class Service:
    """One process of the run, started by the harness (worker/tooling/stack.py) as `key`."""

    name: str
    key: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; see {self.log}"
            )


@dataclass
class Worker:
    service: Service
    node: str
    processes: int
    queue: str
    # Other queues it consumes (payhook's sweep and notification queues): paused with `queue`.
    # A worker paused on its task queue alone would still wait on these in a blocking pop
    # (kombu's Redis transport, one second), and take up the resumed queue only when that pop
    # returns: a resume would start anywhere from 0 to 1 s late.
    also: tuple[str, ...] = ()

    def pids(self) -> list[int]:
        """The worker's main process, then its pool processes."""
        return [self.service.process.pid, *children(self.service.process.pid)]


@dataclass
class Stack:
    """The processes of one benchmark run, all on 127.0.0.1, logs in `logs`."""

    database_url: str
    redis_url: str
    logs: Path
    stripe_secret: str
    services: list[Service] = field(default_factory=list)
    _harness: ProcessStack | None = None
    _app: Celery | None = None
    _redis: redis.Redis | None = None
    _started: int = 0

    def env(self, role: str) -> dict[str, str]:
        # The stack's own settings only: no PAYHOOK_* of the caller's environment leaks in.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PAYHOOK_", "REFERENCE_", "PG", "PROMETHEUS_"))
        }
        env = {**inherited, "PGAPPNAME": APP_NAMES[role]}
        if role.startswith("payhook"):
            env.update(
                PAYHOOK_DATA_DIR=str(self.logs / "data"),
                PAYHOOK_DATABASE_URL=self.database_url,
                PAYHOOK_BROKER_URL=self.redis_url,
                PAYHOOK_STRIPE_WEBHOOK_SECRETS=self.stripe_secret,
            )
        else:
            env.update(
                REFERENCE_DATABASE_URL=self.libpq_url,
                REFERENCE_BROKER_URL=self.redis_url,
                REFERENCE_STRIPE_SECRET=self.stripe_secret,
            )
        return env

    @property
    def libpq_url(self) -> str:
        """The database URL as libpq takes it (no SQLAlchemy driver name)."""
        url = make_url(self.database_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    @property
    def app(self) -> Celery:
        """A plain Celery client: publishes the empty tasks, pauses and resumes workers."""
        if self._app is None:
            self._app = Celery("bench-client", broker=self.redis_url, set_as_current=False)
            self._app.conf.broker_connection_retry_on_startup = True
        return self._app

    def start_receiver(self, processes: int) -> tuple[Service, str]:
        port = free_port()
        command = _payhook("serve", "--port", str(port), "--workers", str(processes))
        service = self._start("payhook receiver", command)
        base_url = f"http://127.0.0.1:{port}"
        self._wait_http(service, f"{base_url}/readyz")
        return service, base_url

    def start_reference_receiver(self, processes: int, pool_size: int) -> tuple[Service, str]:
        port = free_port()
        # uvicorn's defaults (access log, its choice of loop and HTTP parser), its own workers.
        command = [sys.executable, "-m", "uvicorn", "--factory", "--port", str(port)]
        command += ["--workers", str(processes)] if processes > 1 else []
        command += ["worker.tooling.bench.reference.receiver:create_app"]
        env = self.env("reference receiver")
        env["REFERENCE_POOL_SIZE"] = str(pool_size)
        service = self._start("reference receiver", command, env)
        base_url = f"http://127.0.0.1:{port}"
        self._wait_http(service, f"{base_url}/healthz")
        return service, base_url

    def start_worker(self, processes: int) -> Worker:
        node = f"bench{processes}-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        command = _payhook(
            "worker",
            "--concurrency",
            str(processes),
            "--hostname",
            node,
            # Mingle only makes a starting worker wait for its peers' answers; nothing measured.
            "--without-mingle",
            # As deployed: its Prometheus metrics observed in every child, served by the parent.
            "--metrics-port",
            str(free_port()),
            "--metrics-address",
            "127.0.0.1",
        )
        env = self.env("payhook worker")
        metrics = self.logs / f"worker-metrics-{node.split('@')[0]}"
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        also = (SWEEP_QUEUE, NOTIFY_QUEUE)
        return self._worker("payhook worker", command, node, processes, QUEUE, env, also)

    def start_reference_worker(self, processes: int) -> Worker:
        node = f"reference{processes}-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        command = [sys.executable, "-m", "worker.tooling.bench.reference.tasks", "worker"]
        command += ["--concurrency", str(processes), "--hostname", node, "--without-mingle"]
        command += ["--loglevel", "INFO"]
        return self._worker("reference worker", command, node, processes, REFERENCE_QUEUE)

    def _worker(
        self,
        role: str,
        command: list[str],
        node: str,
        processes: int,
        queue: str,
        env: dict[str, str] | None = None,
        also: tuple[str, ...] = (),
    ) -> Worker:
        service = self._start(role, command, env)
        worker = Worker(service, node, processes, queue, also)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            service.check_alive()
            # Prefork children come up after the main process answers.
            answered = self.app.control.ping(destination=[node], timeout=0.5)
            if answered and len(children(service.process.pid)) >= processes:
                return worker
            time.sleep(0.2)
        raise BenchError(
            f"the {role} did not answer within {START_TIMEOUT_S:.0f} s; see {service.log}"
        )

    def stop(self, service: Service) -> None:
        """SIGTERM, as an orchestrator stops it; SIGKILL to its group if it outstays that."""
        with suppress(StackError, KeyError):
            self.harness.terminate(service.key, STOP_TIMEOUT_S)
        if service in self.services:
            self.services.remove(service)

    @property
    def harness(self) -> ProcessStack:
        if self._harness is None:
            self._harness = ProcessStack({}, self.logs)
        return self._harness

    def pause(self, worker: Worker) -> None:
        """Stop the worker taking tasks (it finishes the ones it has): a backlog builds up."""
        for queue in (worker.queue, *worker.also):
            self._control(worker, "cancel_consumer", queue)
        # A poll issued just before the cancel may still be waiting on the queue (kombu polls
        # for one second): let it run out so that no message slips through.
        time.sleep(1.2)

    def resume(self, worker: Worker) -> None:
        """Consume again, the task queue first: nothing else is waited on when it starts."""
        for queue in (worker.queue, *worker.also):
            self._control(worker, "add_consumer", queue)

    def task_events(self, worker: Worker, on: bool) -> None:
        """Turn the worker's task events on (as Flower needs them) or off."""
        self._control(worker, "enable_events" if on else "disable_events")

    def _control(self, worker: Worker, command: str, *args: str) -> None:
        replies = getattr(self.app.control, command)(
            *args, destination=[worker.node], reply=True, timeout=CONTROL_TIMEOUT_S
        )
        if not replies:
            worker.service.check_alive()
            raise BenchError(f"the worker did not answer {command}; see {worker.service.log}")

    def redis_cpu_s(self) -> float:
        """CPU seconds the Redis server has used (INFO cpu): shared with its other clients."""
        info = self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        return self._redis

    def queue_length(self, queue: str) -> int:
        return int(self.redis.llen(queue))

    def check_alive(self) -> None:
        for service in self.services:
            service.check_alive()

    def close(self) -> None:
        for service in list(self.services):
            self.stop(service)
        if self._app is not None:
            self._app.close()
        if self._redis is not None:
            self._redis.close()

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Service:
        self._started += 1
        key = f"{self._started:02d}-{name.replace(' ', '-')}"
        process = self.harness.start(key, command, env or self.env(name))
        service = Service(name, key, process, self.harness.log_of(key))
        self.services.append(service)
        return service

    def _wait_http(self, service: Service, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            service.check_alive()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise BenchError(
            f"{service.name} was not ready within {START_TIMEOUT_S:.0f} s; see {service.log}"
        )


def _payhook(*args: str) -> list[str]:
    return payhook(*args)
