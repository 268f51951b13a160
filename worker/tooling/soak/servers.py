"""The servers `payhook soak` runs against, and the only ones it ever restarts: a PostgreSQL
cluster and a Redis it started itself, in a temporary folder, on private loopback ports."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

from worker.tooling.processes import free_port

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SOAK_DATABASE = "payhook_soak"
START_TIMEOUT_S = 60
_WAIT = ("-w", "-t", "60")  # pg_ctl: wait for the server, at most 60 s


class SoakError(Exception):
    """The soak cannot run as asked; the message says why, in one line."""


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SoakError(
            f"{what} must be on this machine (127.0.0.1, localhost or ::1), not {host!r}"
        )


def fresh_database(url: str) -> None:
    """Drop and create the database `url` names; only one whose name says it is a soak's."""
    parsed = make_url(url)
    name = parsed.database or ""
    if "soak" not in name:
        raise SoakError(
            f"the soak drops and recreates its database: name one with 'soak' in it, not {name!r}"
        )
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise SoakError(f"cannot create database {name!r}: {str(error).strip()}") from None


def flush_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).flushdb()
    except redis.RedisError as error:
        raise SoakError(f"Redis at {url} is not usable: {error}") from None


def wait_for_redis(url: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise SoakError(f"Redis at {url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.1)


class PrivateRedis:
    """redis-server on a private port, without persistence: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SoakError("--private-servers needs redis-server on the PATH")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        with (self.folder / "redis.log").open("ab") as log:
            # Fixed arguments and our own port: nothing here comes from outside.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        wait_for_redis(self.url)

    def restart(self) -> str:
        self.kill()
        self.start()
        return f"Redis restarted (SIGKILL, no persistence: queued messages lost), port {self.port}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class PrivatePostgres:
    """A PostgreSQL cluster made with initdb in a temporary folder, run by pg_ctl as the
    postgres OS user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgresql.log"
        self.port = free_port()
        self.bin = _postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{SOAK_DATABASE}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        if not self.data.exists():
            self._run(
                "initdb", *self._pgdata, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
            )
        # fsync off: the faults are processes killed, not the machine losing power, and
        # PostgreSQL's crash recovery after an immediate stop does not need it. Commits stay
        # synchronous, so what was acknowledged is there after the restart.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", *self._pgdata, *_WAIT, "-l", str(self.log), "-o", options, "start")

    def restart(self) -> str:
        # Immediate: no checkpoint, open connections cut, crash recovery at the next start.
        self._run(
            "pg_ctl", *self._pgdata, *_WAIT, "-l", str(self.log), "-m", "immediate", "restart"
        )
        return f"PostgreSQL restarted (immediate stop, crash recovery), port {self.port}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", *self._pgdata, *_WAIT, "-m", "fast", "stop")

    @property
    def _pgdata(self) -> tuple[str, str]:
        return ("-D", str(self.data))

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        # Fixed programs from the PostgreSQL installation and arguments we built.
        done = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise SoakError(f"{program} failed: {why[-1] if why else done.returncode}")


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found is not None:
        return Path(found).resolve().parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not installed:
        raise SoakError("--private-servers needs PostgreSQL's initdb and pg_ctl")
    return Path(installed[-1]).parent
