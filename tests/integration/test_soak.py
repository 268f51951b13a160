"""`payhook soak`, small and without faults: the command runs end to end and says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import service_missing
from tests.integration.stack import DATABASE_URL, REDIS_URL, fresh_database, payhook, scoped

pytestmark = pytest.mark.integration

NAME = "payhook_soak_it"


def soak_redis_url() -> str:
    """The test Redis, in a database of its own (12): the soak flushes it."""
    parts = urlsplit(REDIS_URL)
    url = urlunsplit((parts.scheme, parts.netloc, "/12", "", ""))
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.ConnectionError:
        service_missing(f"Redis at {REDIS_URL}")
    return url


def test_a_small_soak_without_faults_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    fresh_database(NAME)  # fails (CI) or skips when PostgreSQL is not there
    database_url = make_url(DATABASE_URL).set(database=scoped(NAME)).render_as_string(False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env["PAYHOOK_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        payhook(
            "soak",
            "--deliveries",
            "300",
            "--no-faults",
            "--grace",
            "5",
            "--seed",
            "7",
            "--database-url",
            database_url,
            "--redis-url",
            soak_redis_url(),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    summary = done.stdout
    assert done.returncode == 0, summary + done.stderr
    assert "deliveries sent      300 (240 distinct events, 60 copies" in summary
    assert "accepted             300 answered 202" in summary
    assert "acknowledged_duplicate/same_event" in summary
    assert "lost                 0" in summary
    assert "applied twice        0" in summary
    assert "received and verified by the host endpoint, 0 missing" in summary
    assert "faults injected      0" in summary
    assert "invariants hold" in summary
