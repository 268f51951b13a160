"""The servers the tests need, ensured and started (installed with apt-get when root).

PostgreSQL, Redis, RabbitMQ, PgBouncer (transaction mode, in front of that PostgreSQL) and the
test database; every step is idempotent: what already runs is left alone. Standard library
only (psycopg when the venv has it), so that ./dev can run it before the venv exists.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse as up
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/payhook_test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
# A PgBouncer of the tests' own, on a port of its own (a system PgBouncer may hold 6432).
DEFAULT_PGBOUNCER_URL = "postgresql+psycopg://postgres@127.0.0.1:6439/payhook_test"
PGBOUNCER_PORT = 6439


class ServiceError(Exception):
    """One line saying what is missing and what to do; ./dev prints it and exits 1."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class Apt:
    updated: bool = False
    log: Path = field(default_factory=lambda: Path(f"/tmp/payhook-apt-{os.getpid()}.log"))  # noqa: S108

    def available(self) -> bool:
        return is_root() and shutil.which("apt-get") is not None

    def install(self, *packages: str) -> None:
        say(f"installing Debian package(s) {' '.join(packages)} (apt-get, log: {self.log}) …")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with self.log.open("a") as log:
            if not self.updated:
                if subprocess.run(["apt-get", "update"], stdout=log, stderr=log).returncode:
                    raise ServiceError(f"apt-get update failed (log: {self.log})")
                self.updated = True
            done = subprocess.run(
                ["apt-get", "install", "-y", *packages], stdout=log, stderr=log, env=env
            )
        if done.returncode:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise ServiceError(
                f"apt-get install {' '.join(packages)} failed (log: {self.log})\n{tail}"
            )


APT = Apt()


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until(seconds: int, check: Callable[[], bool]) -> bool:
    for _ in range(seconds):
        if check():
            return True
        time.sleep(1)
    return check()


def host_and_port(url: str, default_port: int) -> tuple[str, int]:
    parts = up.urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return parts.hostname or "", port


def is_local_default(url: str, port: int) -> bool:
    """`url` points at this machine on the standard `port`: a server that ./dev manages."""
    host, actual = host_and_port(url, port)
    return actual == port and host in ("", "127.0.0.1", "localhost", "::1")


# --- PostgreSQL ---------------------------------------------------------------------------


def pg_up() -> bool:
    if shutil.which("pg_isready"):
        done = subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", "-t", "2"],
            capture_output=True,
        )
        return done.returncode == 0
    return port_open("127.0.0.1", 5432)


def pg_version() -> str | None:
    """The newest installed version that has a "main" cluster."""
    versions = [p.parent.name for p in Path("/etc/postgresql").glob("*/main") if p.is_dir()]
    if not versions:
        return None
    return max(versions, key=lambda v: [int(n) if n.isdigit() else 0 for n in v.split(".")])


def pg_trust_localhost(version: str) -> None:
    """Fresh Debian clusters want a password over TCP; the test URL has none."""
    hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
    if not hba.is_file() or "added by payhook ./dev" in hba.read_text():
        return
    say(f"postgresql: allowing passwordless (trust) connections from 127.0.0.1 and ::1 in {hba}")
    new = hba.with_name(hba.name + ".payhook-new")
    new.write_text(
        "# added by payhook ./dev: local test server, passwordless over loopback\n"
        "host all all 127.0.0.1/32 trust\n"
        "host all all ::1/128 trust\n" + hba.read_text()
    )
    stat = hba.stat()
    os.chown(new, stat.st_uid, stat.st_gid)
    new.chmod(stat.st_mode & 0o777)
    new.replace(hba)


def ensure_postgresql() -> None:
    if pg_up():
        say("postgresql: running on 127.0.0.1:5432")
        return
    installed = False
    version = pg_version()
    if version is None:
        if not APT.available():
            raise ServiceError(
                "postgresql: nothing answers on 127.0.0.1:5432 and PostgreSQL is not installed: "
                "install and start it (Debian/Ubuntu: apt-get install postgresql) with "
                "passwordless access for user postgres from 127.0.0.1, or set "
                "PAYHOOK_TEST_DATABASE_URL"
            )
        APT.install("postgresql")
        installed = True
        version = pg_version()
        if version is None:
            raise ServiceError(
                "postgresql: installed, but no cluster under /etc/postgresql/*/main; create one "
                "with pg_createcluster and run ./dev again"
            )
    if installed:
        pg_trust_localhost(version)
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
    if pg_up():
        # the package's own scripts started it; pick up the pg_hba.conf change
        subprocess.run([*ctl, "reload"], capture_output=True)
    else:
        say(f"postgresql: starting cluster {version}/main …")
        if subprocess.run([*ctl, "start"], stdout=sys.stderr).returncode:
            raise ServiceError(
                f"postgresql: could not start cluster {version}/main (pg_ctlcluster failed, see "
                "above and /var/log/postgresql/); start it yourself and run ./dev again"
            )
    if not wait_until(30, pg_up):
        raise ServiceError(
            f"postgresql: started cluster {version}/main but 127.0.0.1:5432 does not answer "
            f"after 30 s; see /var/log/postgresql/postgresql-{version}-main.log"
        )
    say("postgresql: running on 127.0.0.1:5432")


def ensure_database(url: str) -> None:
    """Create the database named in `url` if it is missing."""
    parts = up.urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        return
    name = up.unquote(parts.path.lstrip("/"))
    if not name:
        return
    admin = up.urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
    shown = up.urlunsplit(("postgresql", parts.netloc.rpartition("@")[2], "/" + name, "", ""))

    def failed(why: object) -> ServiceError:
        reason = " ".join(str(why).split())
        return ServiceError(f"postgresql: cannot create database {name!r} at {shown}: {reason}")

    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if found is None:
                    try:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                        say(f"postgresql: created database {name}")
                    except psycopg.errors.DuplicateDatabase:
                        pass
        except psycopg.Error as error:
            raise failed(error) from None
        return
    if shutil.which("psql") is None:
        raise failed("neither psycopg (in .venv) nor psql is available")

    def psql(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["psql", admin, "-v", "ON_ERROR_STOP=1", "-tAc", command],
            capture_output=True,
            text=True,
        )

    literal = "'" + name.replace("'", "''") + "'"
    ident = '"' + name.replace('"', '""') + '"'
    found = psql(f"SELECT 1 FROM pg_database WHERE datname = {literal}")  # noqa: S608 (quoted)
    if found.returncode:
        raise failed(found.stderr)
    if found.stdout.strip() != "1":
        made = psql(f"CREATE DATABASE {ident}")
        if made.returncode and "already exists" not in made.stderr:
            raise failed(made.stderr)
        say(f"postgresql: created database {name}")


# --- Redis --------------------------------------------------------------------------------


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis() -> None:
    if redis_up():
        say("redis: running on 127.0.0.1:6379")
        return
    if shutil.which("redis-server") is None:
        if not APT.available():
            raise ServiceError(
                "redis: nothing answers on 127.0.0.1:6379 and redis-server is not installed: "
                "install and start it (Debian/Ubuntu: apt-get install redis-server), or set "
                "PAYHOOK_TEST_REDIS_URL"
            )
        APT.install("redis-server")
    folder = Path("/var/lib/redis") if is_root() else ROOT / ".payhook" / "redis"
    logs = Path("/var/log/redis") if is_root() else folder
    if not redis_up():
        folder.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        say(f"redis: starting redis-server (log: {logs}/ci.log) …")
        options = ["--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379"]
        options += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
        options += ["--logfile", f"{logs}/ci.log"]
        started = subprocess.run(["redis-server", *options], stdout=sys.stderr)
        if started.returncode:
            raise ServiceError(f"redis: redis-server failed to start (see {logs}/ci.log)")
    if not wait_until(30, redis_up):
        raise ServiceError(
            "redis: started redis-server but 127.0.0.1:6379 does not answer PING after 30 s; "
            f"see {logs}/ci.log"
        )
    say("redis: running on 127.0.0.1:6379")


# --- RabbitMQ -----------------------------------------------------------------------------


def rabbitmq_up() -> bool:
    return port_open("127.0.0.1", 5672)


def ensure_rabbitmq() -> None:
    if rabbitmq_up():
        say("rabbitmq: running on 127.0.0.1:5672")
        return
    if shutil.which("rabbitmq-server") is None:
        if not APT.available():
            raise ServiceError(
                "rabbitmq: nothing answers on 127.0.0.1:5672 and rabbitmq-server is not "
                "installed: install and start it (Debian/Ubuntu: apt-get install rabbitmq-server)"
            )
        APT.install("rabbitmq-server")
    if not rabbitmq_up():
        say("rabbitmq: starting rabbitmq-server (takes a few seconds) …")
        if subprocess.run(["rabbitmq-server", "-detached"], stdout=sys.stderr).returncode:
            raise ServiceError(
                "rabbitmq: rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
            )
    if not wait_until(90, rabbitmq_up):
        raise ServiceError(
            "rabbitmq: started rabbitmq-server but 127.0.0.1:5672 does not answer after 90 s; "
            "see /var/log/rabbitmq/"
        )
    say("rabbitmq: running on 127.0.0.1:5672")


# --- PgBouncer ----------------------------------------------------------------------------


def pgbouncer_program() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).is_file()), None
    )


PGBOUNCER_INI = """\
; written by payhook ./dev: the tests' PgBouncer, transaction pooling in front of the
; PostgreSQL on 127.0.0.1:5432
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
; psycopg sends these at connect; PgBouncer refuses unknown startup parameters otherwise.
; `options` (payhook's lock_timeout) is dropped, not applied: see deploy/SCALING.md.
ignore_startup_parameters = extra_float_digits,options
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


def ensure_pgbouncer() -> None:
    where = f"127.0.0.1:{PGBOUNCER_PORT}"
    if port_open("127.0.0.1", PGBOUNCER_PORT):
        say(f"pgbouncer: running on {where} (transaction pooling)")
        return
    program = pgbouncer_program()
    if program is None:
        if not APT.available():
            raise ServiceError(
                f"pgbouncer: nothing answers on {where} and pgbouncer is not installed: install "
                "it (Debian/Ubuntu: apt-get install pgbouncer), or set PAYHOOK_WITH_PGBOUNCER=0"
            )
        APT.install("pgbouncer")
        program = pgbouncer_program()
        if program is None:
            raise ServiceError("pgbouncer: installed, but no pgbouncer program found")
    # PgBouncer refuses to run as root: as root, it runs as the postgres user.
    folder = Path("/var/lib/payhook-pgbouncer") if is_root() else ROOT / ".payhook" / "pgbouncer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(PGBOUNCER_INI.format(port=PGBOUNCER_PORT, folder=folder))
    # Nothing answers on its port, so a pid file left behind is stale (a killed instance).
    (folder / "pgbouncer.pid").unlink(missing_ok=True)
    command = [program, "-d", str(ini)]
    if is_root():
        shutil.chown(folder, "postgres", "postgres")
        for path in folder.iterdir():
            shutil.chown(path, "postgres", "postgres")
        command = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]
    say(f"pgbouncer: starting on {where} (transaction pooling, log: {folder}/pgbouncer.log) …")
    if subprocess.run(command, stdout=sys.stderr).returncode:
        raise ServiceError(f"pgbouncer: could not start (see {folder}/pgbouncer.log)")
    if not wait_until(20, lambda: port_open("127.0.0.1", PGBOUNCER_PORT)):
        raise ServiceError(
            f"pgbouncer: started but {where} does not answer after 20 s; see {folder}/pgbouncer.log"
        )
    say(f"pgbouncer: running on {where} (transaction pooling)")


# --- all together -------------------------------------------------------------------------


def enabled(name: str, default: str) -> bool:
    return os.environ.get(name, default) not in ("0", "", "false", "no")


def ensure_services() -> None:
    """The servers the tests need, and the test database."""
    database = os.environ.get("PAYHOOK_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis = os.environ.get("PAYHOOK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if is_local_default(database, 5432):
        ensure_postgresql()
    else:
        say("postgresql: using PAYHOOK_TEST_DATABASE_URL as given (not managed by ./dev)")
    if is_local_default(redis, 6379):
        ensure_redis()
    else:
        say("redis: using PAYHOOK_TEST_REDIS_URL as given (not managed by ./dev)")
    if enabled("PAYHOOK_WITH_RABBITMQ", "0"):
        ensure_rabbitmq()
    if enabled("PAYHOOK_WITH_PGBOUNCER", "0"):
        pgbouncer = os.environ.get("PAYHOOK_TEST_PGBOUNCER_URL", DEFAULT_PGBOUNCER_URL)
        if is_local_default(pgbouncer, PGBOUNCER_PORT):
            ensure_pgbouncer()
        else:
            say("pgbouncer: using PAYHOOK_TEST_PGBOUNCER_URL as given (not managed by ./dev)")
    ensure_database(database)


def main() -> int:
    try:
        ensure_services()
    except ServiceError as error:
        say(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
