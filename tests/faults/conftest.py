"""Fault-test fixtures: one private PostgreSQL for the session; per test a database of its own
and a broker of its own: a private Redis, or a fresh vhost on the shared RabbitMQ."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.migrate import upgrade
from tests.faults.servers import PostgresServer
from tests.faults.stack import FaultStack, new_stack
from tests.integration.stack import Broker

TEMPLATE = "payhook_template"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.create()
        server.start()
        upgrade(server.fresh_database(TEMPLATE))  # migrated once, copied for every test
        yield server
    finally:
        server.destroy()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Broker:
    """Redis, unless the test is marked `on_both_brokers` (tests/faults/stack.py)."""
    chosen: Broker = getattr(request, "param", "redis")
    return chosen


@pytest.fixture
def stack(tmp_path: Path, postgres: PostgresServer, broker: Broker) -> Iterator[FaultStack]:
    if not postgres.ready():  # a test that stopped it failed before starting it again
        postgres.start()
    # The pid too: the name is a vhost's on the shared RabbitMQ, and another run may be going on.
    name = f"payhook_fault_{os.getpid()}_{next(_numbers)}"
    built = new_stack(tmp_path, postgres, name, TEMPLATE, broker)
    try:
        yield built
    finally:
        built.close()
