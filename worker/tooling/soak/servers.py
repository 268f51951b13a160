"""The servers `payhook soak` runs against: the shared ones checked (loopback only, a database
named for the soak), or private ones it started itself (worker/tooling/servers.py), the only
ones it ever restarts."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SOAK_DATABASE = "payhook_soak"


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
