"""Fault-test fixtures: one private PostgreSQL for the session, a private Redis per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.migrate import upgrade
from tests.faults.servers import PostgresServer
from tests.faults.stack import FaultStack, new_stack

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
def stack(tmp_path: Path, postgres: PostgresServer) -> Iterator[FaultStack]:
    if not postgres.ready():  # a test that stopped it failed before starting it again
        postgres.start()
    built = new_stack(tmp_path, postgres, f"payhook_fault_{next(_numbers)}", TEMPLATE)
    try:
        yield built
    finally:
        built.close()
        built.redis.kill()
