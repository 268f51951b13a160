"""The migrations build exactly the schema the code uses, and can run twice."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from tasks.migrate import alembic_config, upgrade


def test_migrating_twice_is_harmless_and_matches_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)
    # Raises when autogenerate finds any difference between the migrations and tables.py.
    command.check(alembic_config(url))
