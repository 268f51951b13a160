"""The stack `payhook bench` runs against: its own PostgreSQL database and Redis database on
loopback, `payhook serve`, `payhook worker` and the bare insert endpoint as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tasks.migrate import upgrade
from worker.settings import Settings
from worker.taskqueue.app import QUEUE, create_app
from worker.tooling.processes import children, free_port, start

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 5.0
# The empty task, registered only in the benchmark's worker: `--include` imports its module.
EMPTY_TASK = "payhook.bench.empty"
EMPTY_TASK_MODULE = "worker.tooling.bench.tasks"
# Kombu's Redis transport keeps a message it handed out (and that is not acked yet) here.
UNACKED_KEY = "unacked"


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
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; see {self.log}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Worker:
    service: Service
    node: str
    processes: int

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
    _app: Celery | None = None
    _redis: redis.Redis | None = None
    _started: int = 0

    @property
    def env(self) -> dict[str, str]:
        # The stack's own settings only: no PAYHOOK_* of the caller's environment leaks in.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
        return {
            **inherited,
            "PAYHOOK_DATA_DIR": str(self.logs / "data"),
            "PAYHOOK_DATABASE_URL": self.database_url,
            "PAYHOOK_BROKER_URL": self.redis_url,
            "PAYHOOK_STRIPE_WEBHOOK_SECRETS": self.stripe_secret,
            # Bodies are signed before a phase starts; a long phase must not outlive them.
            "PAYHOOK_SIGNATURE_TOLERANCE_S": "3600",
        }

    @property
    def app(self) -> Celery:
        """The bench's own Celery client: publishes the empty task, pauses and resumes."""
        if self._app is None:
            self._app = create_app(
                Settings(database_url=self.database_url, broker_url=self.redis_url)
            )
        return self._app

    def start_receiver(self) -> tuple[Service, str]:
        port = free_port()
        service = self._start("receiver", _payhook("serve", "--port", str(port)))
        base_url = f"http://127.0.0.1:{port}"
        self._wait_http(service, f"{base_url}/readyz")
        return service, base_url

    def start_bare(self) -> tuple[Service, str]:
        port = free_port()
        command = [sys.executable, "-m", "worker.tooling.bench.bare", "--port", str(port)]
        service = self._start("bare insert endpoint", command)
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
            "--include",
            EMPTY_TASK_MODULE,
            # Mingle only makes a starting worker wait for its peers' answers; nothing measured.
            "--without-mingle",
        )
        service = self._start(f"worker ({processes} processes)", command)
        worker = Worker(service, node, processes)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            service.check_alive()
            # Prefork children come up after the main process answers.
            answered = self.app.control.ping(destination=[node], timeout=0.5)
            if answered and len(children(service.process.pid)) >= processes:
                return worker
            time.sleep(0.2)
        raise BenchError(
            f"the worker did not answer within {START_TIMEOUT_S:.0f} s; see {service.log}"
        )

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def pause(self, worker: Worker) -> None:
        """Stop the worker taking tasks (it finishes the ones it has): a backlog builds up."""
        self._control(worker, "cancel_consumer")
        # A poll issued just before the cancel may still be waiting on the queue (kombu polls
        # for one second): let it run out so that no message slips through.
        time.sleep(1.2)

    def resume(self, worker: Worker) -> None:
        self._control(worker, "add_consumer")

    def _control(self, worker: Worker, command: str) -> None:
        replies = getattr(self.app.control, command)(
            QUEUE, destination=[worker.node], reply=True, timeout=CONTROL_TIMEOUT_S
        )
        if not replies:
            worker.service.check_alive()
            raise BenchError(f"the worker did not answer {command}; see {worker.service.log}")

    def executed(self, worker: Worker, task: str) -> int:
        """How many `task`s the worker ran since it started (Celery's own count)."""
        stats: dict[str, Any] = (
            self.app.control.inspect([worker.node], timeout=CONTROL_TIMEOUT_S).stats() or {}
        )
        totals: dict[str, int] = stats.get(worker.node, {}).get("total", {})
        return int(totals.get(task, 0))

    def queue_empty(self) -> tuple[bool, int]:
        """(nothing waiting and nothing handed out unacked, messages waiting)."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        client = self._redis
        waiting = int(client.llen(QUEUE))
        return waiting == 0 and int(client.hlen(UNACKED_KEY)) == 0, waiting

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

    def _start(self, name: str, command: list[str]) -> Service:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._started += 1
        log = self.logs / f"{self._started:02d}-{name.split()[0]}.log"
        process = start(command, self.env, log)
        service = Service(name, process, log)
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
    return [sys.executable, "-m", "worker.cli", *args]
