"""What the unit tests share: a migrated SQLite database, and the ASGI app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tasks.migrate import upgrade
from tasks.storage.engine import make_engine
from tests.unit.webapp import Harness, harness_for, make_settings


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database in the test's folder, migrated to the newest schema."""
    url = f"sqlite:///{tmp_path / 'payhook.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The receiver and API in-process; every publish checked to come after its commit."""
    harness = harness_for(make_settings(tmp_path), monkeypatch)
    yield harness
    harness.runtime.engine.dispose()
    assert harness.publisher.uncommitted == [], "published before the commit"
