"""Test-only fault points for a worker: `payhook worker --include tests.faults.worker_hooks`.

Nothing here is imported by payhook itself: the hooks ride on Celery signals and SQLAlchemy
engine events. They do nothing unless the worker's environment names `FAULTS_DIR`; a test arms
a point by writing the file `FAULTS_DIR/<point>`, one delivery id (or `*`) per line, optionally
followed by the seconds to pause (default 30), and disarms it by deleting the file:

- `started`: in `task_prerun`, before the task touches the database;
- `before_commit`: just before COMMIT of the transaction that records the outcome;
- `after_commit`: in `task_postrun`: the outcome is committed, the message not yet acknowledged;
- `crash`: the process exits on the spot (`os._exit`) each time it claims the event, i.e. after
  a redelivery has been counted: a poison delivery.

Every run of a delivery is appended to `runs.log` as "<pid> <delivery id>". A pause happens once
per point and delivery: the process creates `<point>-<delivery>.pid` with
its pid (so that the test knows whom to kill), then sleeps. A crash appends its pid to
`crash-<delivery>.log` first.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun
from sqlalchemy import Engine, event

from tasks.shims import PROCESS_DELIVERY

FOLDER = Path(os.environ["FAULTS_DIR"]) if os.environ.get("FAULTS_DIR") else None
DEFAULT_PAUSE_S = 30.0

# The delivery this (single-threaded, prefork) process is working on, and whether its open
# transaction records the outcome. Module state, not `conn.info`: an invalidated connection
# (the server went away) raises on every attribute, and a hook must never add an error.
_current: int | None = None
_records_outcome = False


def armed(point: str, delivery_id: int | None) -> float | None:
    """Seconds to pause (or any number, for a crash) if `point` is armed for this delivery."""
    if FOLDER is None or delivery_id is None:
        return None
    try:
        lines = (FOLDER / point).read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        which, _, seconds = line.strip().partition(" ")
        if which in ("*", str(delivery_id)):
            return float(seconds) if seconds.strip() else DEFAULT_PAUSE_S
    return None


def pause(point: str, delivery_id: int | None) -> None:
    seconds = armed(point, delivery_id)
    if seconds is None:
        return
    assert FOLDER is not None
    try:
        fd = os.open(FOLDER / f"{point}-{delivery_id}.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # paused here once already: this is the attempt after the fault
    with os.fdopen(fd, "w") as out:
        out.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        # A soft time limit must not cut the pause short: the test decides when it ends.
        with contextlib.suppress(Exception):
            time.sleep(min(left, 0.1))


@task_prerun.connect
def _started(task: Any = None, args: Any = None, **_: Any) -> None:
    global _current
    _current = int(args[0]) if task is not None and task.name == PROCESS_DELIVERY else None
    if FOLDER is not None and _current is not None:
        with (FOLDER / "runs.log").open("a") as runs:  # who ran what: "<pid> <delivery>"
            runs.write(f"{os.getpid()} {_current}\n")
    pause("started", _current)


@task_postrun.connect
def _finished(task: Any = None, **_: Any) -> None:
    global _current
    if task is not None and task.name == PROCESS_DELIVERY:
        pause("after_commit", _current)
    _current = None


@event.listens_for(Engine, "before_cursor_execute")
def _statement(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
    global _records_outcome
    # On PostgreSQL the outcome is written inside the statement that marks the delivery
    # processed (WITH recorded AS (INSERT INTO outcomes …) UPDATE deliveries …). A statement run
    # in autocommit (the start mark, which can record a copy's outcome) commits as it runs:
    # there is no COMMIT of it to pause before.
    autocommit = getattr(getattr(cursor, "connection", None), "autocommit", False) is True
    if "INSERT INTO outcomes" in statement and not autocommit:
        _records_outcome = True
    # The claim (on PostgreSQL inside WITH claimed AS (INSERT INTO idempotency_keys …)).
    if "INSERT INTO idempotency_keys" in statement and armed("crash", _current):
        assert FOLDER is not None
        with (FOLDER / f"crash-{_current}.log").open("a") as log:
            log.write(f"{os.getpid()}\n")
        os._exit(70)


@event.listens_for(Engine, "commit")
def _commit(_conn: Any) -> None:
    global _records_outcome
    if _records_outcome:
        _records_outcome = False
        pause("before_commit", _current)


@event.listens_for(Engine, "rollback")
def _rollback(_conn: Any) -> None:
    global _records_outcome
    _records_outcome = False
