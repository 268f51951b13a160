"""The publisher the receivers' (and replay's) tests use instead of a broker: it checks, at the
moment of publishing, that the delivery is committed, waiting for its outcome, as another
connection sees it: a worker that picks the task up at once must find it so."""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import make_url

WAITING = (
    "SELECT deliveries.id FROM deliveries"
    " LEFT JOIN outcomes ON outcomes.delivery_id = deliveries.id"
    " WHERE deliveries.id = ? AND outcomes.delivery_id IS NULL"
)


class CommittedPublisher:
    """Records published delivery ids; a delivery not yet committed when published is kept in
    `uncommitted` (the receiver swallows a failed publish, so the test checks that list)."""

    def __init__(self, database_url: str) -> None:
        path = make_url(database_url).database
        assert path, f"the receivers' unit tests run on a SQLite file, not {database_url}"
        self._path = path
        self.published: list[int] = []
        self.uncommitted: list[int] = []

    def __call__(self, delivery_id: int) -> None:
        # A connection of its own, in autocommit: it sees only what was committed (WAL).
        with sqlite3.connect(self._path, isolation_level=None) as other:
            row = other.execute(WAITING, (delivery_id,)).fetchone()
        if row is None:
            self.uncommitted.append(delivery_id)
            raise AssertionError(f"delivery {delivery_id} published before its commit")
        self.published.append(delivery_id)
