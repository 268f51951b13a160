"""The fault tests' private servers: the tooling's, with a missing program a skip (or, under CI,
a failure) instead of an error."""

from __future__ import annotations

from tests.conftest import service_missing
from worker.tooling.processes import free_port
from worker.tooling.servers import MissingProgram, PrivatePostgres, PrivateRedis, wait_until

__all__ = ["PostgresServer", "RedisServer", "free_port", "wait_until"]


class RedisServer(PrivateRedis):
    def start(self) -> None:
        try:
            super().start()
        except MissingProgram as missing:
            service_missing(f"{missing} (the fault tests start their own)")


class PostgresServer(PrivatePostgres):
    def create(self) -> None:
        try:
            super().create()
        except MissingProgram as missing:
            service_missing(f"{missing} (the fault tests start their own)")
