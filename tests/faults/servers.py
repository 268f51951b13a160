"""Private Redis and PostgreSQL servers that a fault test may stop, kill and restart at will.

Each server runs from its own temporary folder on a free port, so that restarting it disturbs
nothing else on the machine (not the shared test servers, not another test run).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import psycopg
import redis

from tests.conftest import service_missing

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(ready: object, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Call `ready()` until it answers true; fail after `timeout` seconds."""
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s")


@dataclass
class RedisServer:
    """`redis-server` without persistence: a restart comes back empty, as in production."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server (the fault tests start their own)")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, f"redis-server on port {self.port} (log: {self.log})")

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited {self.process.returncode}; see {self.log}")
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut down cleanly (nothing is saved: the data is gone)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server bin folder (Debian layout, or on the PATH)."""
    found = glob("/usr/lib/postgresql/*/bin/initdb")
    if found:

        def version(path: str) -> tuple[int, ...]:
            return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

        return Path(max(found, key=version)).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own (trust auth, fsync off), run as the `postgres` user
    when the tests run as root, since PostgreSQL refuses to run as root."""

    port: int = field(default_factory=free_port)
    folder: Path | None = None
    bin: Path | None = None

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def log(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def create(self) -> None:
        """initdb in a fresh folder; the cluster is configured but not started."""
        self.bin = postgres_bin()
        if self.bin is None or not (self.bin / "pg_ctl").exists():
            service_missing("PostgreSQL server binaries (initdb, pg_ctl)")
            return
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="payhook-faults-pg-"))
        if os.geteuid() == 0:
            try:
                shutil.chown(self.folder, "postgres", "postgres")
            except LookupError:
                service_missing("an OS user `postgres` to run the private PostgreSQL as")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
                # Durability is not what these tests are about; speed is.
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                # A backend whose client was killed notices soon, even while it waits.
                "client_connection_check_interval = 500\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        wait_until(self.ready, f"PostgreSQL on port {self.port} (log: {self.log})")

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back and disconnects every session; `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def kill(self) -> None:
        self.stop("immediate")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.folder is None:
            return
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def _run(self, program: str, *args: str) -> None:
        assert self.bin is not None
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser:
                command = [runuser, "-u", "postgres", "--", *command]
            else:
                command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(args[:1])} … failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )

    def fresh_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (from `template` if given); return its SQLAlchemy URL."""
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)
