"""What the unit tests share: a migrated SQLite database, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tasks.migrate import upgrade
from tasks.storage.engine import make_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database in the test's folder, migrated to the newest schema."""
    url = f"sqlite:///{tmp_path / 'payhook.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
