"""`payhook bench` works: a tiny run against real PostgreSQL and Redis exits 0 and writes its
JSON. A smoke check only: no figure is judged here, the machine running CI is not a benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import service_missing
from tests.integration.stack import DATABASE_URL, REDIS_URL

pytestmark = pytest.mark.integration

FIGURES = {
    "drain_per_s",
    "confirm_per_s",
    "bare_per_s",
    "bare_p50_ms",
    "bare_p99_ms",
    "receiver_per_s",
    "receiver_p50_ms",
    "receiver_p99_ms",
    "unique_per_s",
    "duplicates_per_s",
    "hot_per_s",
    "e2e_per_s",
    "lag_offered_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
    "e2e_1w_per_s",
    "e2e_2w_per_s",
    "rss_receiver_mb",
    "rss_worker_mb",
}


def _services() -> tuple[str, str]:
    """The test servers, with a database and a Redis database of the benchmark's own."""
    database = make_url(DATABASE_URL).set(database="payhook_bench_smoke")
    redis_url = urlunsplit(urlsplit(REDIS_URL)._replace(path="/13"))
    admin = database.set(drivername="postgresql", database="postgres")
    try:
        psycopg.connect(admin.render_as_string(hide_password=False), connect_timeout=5).close()
    except psycopg.OperationalError:
        service_missing(f"PostgreSQL at {database.render_as_string(hide_password=True)}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except redis.ConnectionError:
        service_missing(f"Redis at {redis_url}")
    return database.render_as_string(hide_password=False), redis_url


def test_a_tiny_bench_run_passes_its_invariant_check_and_writes_every_figure(
    tmp_path: Path,
) -> None:
    database_url, redis_url = _services()
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env["COLUMNS"] = "160"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "bench",
            "--scale",
            "0.01",
            "--scaling",
            "1,2",
            "--database-url",
            database_url,
            "--redis-url",
            redis_url,
            "--phase-timeout",
            "60",
            "--json-out",
            str(out),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "invariant" in result.stdout
    document = json.loads(out.read_text())
    assert set(document["figures"]) >= FIGURES
    assert document["invariant"]["ok"] is True
    assert document["invariant"]["deliveries"] == document["invariant"]["outcomes"] > 0
    assert document["refused"] == {}
    assert {c["name"] for c in document["comparisons"]} >= {
        "end to end vs empty-task drain",
        "receiver vs bare insert endpoint",
        "duplicates vs unique",
        "hot payment vs distinct payments",
        "lag p99 at half load",
        "worker peak RSS",
    }
    assert len(document["runs"]) == 1
