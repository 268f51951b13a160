"""Private Redis and PostgreSQL servers that the soak and the fault tests may kill and restart.

Each runs from a folder of its own on a free loopback port, so that restarting it disturbs
nothing else on the machine: not the shared servers, not another run. The one implementation
for both; a missing program is `MissingProgram`, which the tests turn into skip-or-fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from glob import glob
from pathlib import Path

import psycopg
import redis

from worker.tooling.processes import free_port

READY_TIMEOUT_S = 60.0


class ServerError(Exception):
    """A private server could not be started or stopped; the message says why, in one line."""


class MissingProgram(ServerError):
    """A program a private server needs (redis-server, initdb, pg_ctl, runuser) is missing."""


def wait_until(ready: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Call `ready()` until it answers true; ServerError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise ServerError(f"{what} not ready after {timeout:.0f} s")


class PrivateRedis:
    """`redis-server` without persistence: a restart comes back empty, as in production."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingProgram("redis-server is not on the PATH")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        with self.log.open("ab") as out:
            # Fixed arguments and our own port: nothing here comes from outside.
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        wait_until(self.ready, f"redis-server on port {self.port} (log: {self.log})")

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ServerError(f"redis-server exited {self.process.returncode}; see {self.log}")
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut down cleanly (nothing is saved: the data is gone)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (SIGKILL when `kill`) and start again on the same port, empty."""
        self.kill() if kill else self.stop()
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


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian's layout, else the PATH).

    Versions compare as numbers: 16 is newer than 9.6.
    """
    found = glob("/usr/lib/postgresql/*/bin/initdb")
    if found:

        def version(path: str) -> tuple[int, ...]:
            return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

        return Path(max(found, key=version)).parent
    initdb = shutil.which("initdb")
    if initdb is None or not (Path(initdb).parent / "pg_ctl").exists():
        raise MissingProgram("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    return Path(initdb).parent


class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust auth, fsync off), run as the `postgres` OS user
    when we are root, since PostgreSQL refuses to run as root.

    fsync and full-page writes are off: the faults are processes killed, not the machine losing
    power. Commits stay synchronous, so what was acknowledged is there after a crash restart.
    """

    def __init__(self, folder: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self._given = folder
        self.folder: Path | None = None
        self.bin: Path | None = None

    @property
    def data(self) -> Path:
        return self._folder / "data"

    @property
    def log(self) -> Path:
        return self._folder / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def create(self) -> None:
        """initdb in its folder; the cluster is configured but not started."""
        self.bin = postgres_bin()
        # Under /tmp by default: the postgres OS user must be able to reach it.
        if self._given is None:
            self.folder = Path(tempfile.mkdtemp(prefix="payhook-pg-"))
        else:
            self.folder = self._given
            self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                shutil.chown(self.folder, "postgres", "postgres")
            except LookupError:
                raise MissingProgram("no OS user `postgres` to run PostgreSQL as") from None
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
                # A backend whose client was killed notices soon, even while it waits.
                "client_connection_check_interval = 500\n"
            )

    def start(self) -> None:
        if self.folder is None:
            self.create()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
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
        if self.folder is not None and self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

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
        with contextlib.suppress(ServerError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def fresh_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (from `template` if given); return its SQLAlchemy URL."""
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    @property
    def _folder(self) -> Path:
        if self.folder is None:
            raise ServerError("the private PostgreSQL has not been created")
        return self.folder

    def _run(self, program: str, *args: str) -> None:
        if self.bin is None:
            raise ServerError("the private PostgreSQL has not been created")
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise MissingProgram("runuser, to run PostgreSQL as the postgres OS user")
            command = [runuser, "-u", "postgres", "--", *command]
        # Fixed programs of the PostgreSQL installation and arguments we built.
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)  # noqa: S603
        if done.returncode != 0:
            why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise ServerError(f"{program} failed ({done.returncode}): {why[-1] if why else ''}")
