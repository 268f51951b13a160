"""`payhook bench` works: a tiny run against real PostgreSQL and Redis, payhook beside the
reference design with task events on and off, exits 0 with its invariant holding and writes every
figure to its JSON. A smoke check only: no figure is judged here, the machine running CI is not a
benchmark."""

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

SIDES = ("payhook", "reference")
PHASES = ("unique", "duplicates", "hot")
CPU = ("receiver", "worker_main", "worker_children", "pg_worker", "redis", "machine", "load")


def _figures(mode: str) -> set[str]:
    """Every figure a run with task events `mode` must write, for both sides."""
    names = {f"{mode}.drain.per_s", f"{mode}.drain.cpu_ms.worker"}
    for side in SIDES:
        for phase in PHASES:
            names |= {f"{mode}.{side}.{phase}.processed_per_s"}
            names |= {f"{mode}.{side}.{phase}.cpu_ms.{group}" for group in CPU}
        names |= {f"{mode}.{side}.unique.received_per_s", f"{mode}.{side}.e2e.per_s"}
        names |= {f"{mode}.{side}.e2e.cpu_ms.{group}" for group in CPU}
        names |= {f"{mode}.{side}.lag.p99_ms", f"{mode}.{side}.unique.connections_opened"}
    return names


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
            "--task-events",
            "on,off",
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
    figures = document["figures"]
    missing = (_figures("on") | _figures("off")) - set(figures)
    assert not missing, sorted(missing)
    for side in SIDES:
        assert figures[f"rss.{side}.receiver"] > 0
        assert figures[f"rss.{side}.worker_child"] > 0
        # CPU was read from /proc: a side that processed deliveries spent some
        assert figures[f"on.{side}.unique.cpu_ms.worker"] > 0
    assert document["invariant"]["ok"] is True
    assert document["invariant"]["deliveries"] == document["invariant"]["outcomes"] > 0
    assert document["refused"] == {}
    labels = {c["label"] for c in document["comparisons"]}
    assert {
        "receiver (all its processes)",
        "worker, main + children",
        "machine (all of the above)",
        "payhook end to end / empty-task drain",
        "payhook duplicates / unique backlog",
        "payhook hot payment / unique backlog",
        "receive-to-outcome lag p99 there",
    } <= labels
    assert len(document["runs"]) == 1
