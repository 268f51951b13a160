"""How a worker's metrics are exposed: `payhook worker --metrics-port 9808`.

Prefork children count in their own memory, which the parent cannot see; so the worker runs in
prometheus-client's multiprocess mode. Each process writes its values to files in
PROMETHEUS_MULTIPROC_DIR (the client chooses this mode on import, so the variable must be set
before the program starts); the parent serves /metrics on the port with a registry that sums
every process's files, and adds the broker queue's depth, read from Redis at each scrape. The
directory belongs to this one worker: it is emptied at start, and a child that exits is marked
dead (its live gauges, if any, are dropped; its counters keep counting towards the totals).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery.signals import worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tasks.storage import outbox

log = logging.getLogger("payhook.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
QUEUE_DEPTH = "payhook_queue_depth"
# Kombu keeps a Redis list per priority step: the queue's name, then name + "\x06\x16" + step.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (3, 6, 9)


class MetricsSetupError(Exception):
    """The worker's metrics cannot be served: the message is the one line shown."""


def multiprocess_dir() -> Path:
    """The directory the processes write to; refused unless multiprocess mode is really on."""
    value = os.environ.get(MULTIPROC_ENV, "")
    if not value or values.ValueClass is values.MutexValue:
        raise MetricsSetupError(
            f"--metrics-port needs {MULTIPROC_ENV} set before the worker starts: a directory "
            "of its own where the worker's processes write their metrics"
        )
    return Path(value)


def serve_worker_metrics(
    *, port: int, address: str, broker: str | None, queue: str, database: str | None = None
) -> CollectorRegistry:
    """Empty the multiprocess directory, then serve /metrics from this (parent) process.

    `broker` is a Redis URL whose `queue` depth is reported, or None for other brokers;
    `database`, when given, is read at each scrape for the outbox's backlog.
    """
    directory = multiprocess_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # files of an earlier run would be summed in
        stale.unlink()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    if broker is not None:
        registry.register(QueueDepth(_redis_client(broker), queue))
    if database is not None:
        registry.register(OutboxBacklog(database))
    worker_process_shutdown.connect(_child_exited, weak=False)
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        raise MetricsSetupError(
            f"cannot serve metrics on {address}:{port}: {error.strerror}"
        ) from None
    log.info("worker metrics on http://%s:%s/metrics", address, port)
    return registry


def _child_exited(pid: int, **_: Any) -> None:
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _redis_client(url: str) -> Callable[[], redis.Redis]:
    @cache
    def client() -> redis.Redis:  # built on the first scrape, in the process that scrapes
        return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    return client


class QueueDepth(Collector):
    """`payhook_queue_depth`: messages waiting in the broker's Redis lists, read per scrape."""

    def __init__(self, client: Callable[[], redis.Redis], queue: str) -> None:
        self._client = client
        self._queue = queue

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        keys = [self._queue] + [
            f"{self._queue}{REDIS_PRIORITY_SEPARATOR}{step}" for step in REDIS_PRIORITY_STEPS
        ]
        try:
            depth = sum(int(self._client().llen(key)) for key in keys)
        except redis.RedisError as error:
            log.warning("queue depth unknown, Redis did not answer: %s", type(error).__name__)
            return []
        family = self._family()
        family.add_metric([self._queue], depth)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            QUEUE_DEPTH,
            "Tasks waiting in the broker queue (Redis), read at scrape time",
            labels=["queue"],
        )


class OutboxBacklog(Collector):
    """`payhook_notifications_pending` and `payhook_notifications_oldest_pending_seconds` per
    endpoint, read from the database at each scrape.

    Its own engine without a pool: a connection is opened per scrape and closed, so nothing of
    it is inherited by a prefork child forked later.
    """

    def __init__(self, database: str) -> None:
        self._database = database

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        engine = create_engine(self._database, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                found = outbox.backlog(conn, datetime.now(UTC))
        except SQLAlchemyError as error:
            log.warning("outbox backlog unknown, the database did not answer: %s", error)
            return []
        finally:
            engine.dispose()
        pending, oldest = self._families()
        for url, count, age in found:
            pending.add_metric([_without_credentials(url)], count)
            oldest.add_metric([_without_credentials(url)], age)
        return [pending, oldest]

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "payhook_notifications_pending",
                "Host notifications not yet delivered to the endpoint nor failed",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "payhook_notifications_oldest_pending_seconds",
                "Age of the oldest host notification still pending for the endpoint",
                labels=["endpoint"],
            ),
        ]


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
