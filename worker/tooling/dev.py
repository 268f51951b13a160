"""./dev's commands. The ./dev script only finds Python and keeps .venv installed, then runs
this module: with .venv's Python, or (help, services) with any Python >= 3.11.

Standard library only at import time, so that it runs before the venv has anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from worker.tooling import devservices
from worker.tooling.devservices import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, ServiceError

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"

USAGE = """\
usage: ./dev COMMAND [ARGS...]

  demo [ARGS]     run `payhook demo ARGS` (embedded default: SQLite + filesystem
                  broker, no services needed)
  test [ARGS]     ensure PostgreSQL, Redis, RabbitMQ and PgBouncer run, then `pytest ARGS`
                  (paths are relative to the repo root, e.g. ./dev test tests/unit -q)
  bench [ARGS]    ensure PostgreSQL and Redis, then `payhook bench ARGS` (payhook beside a
                  plain design; installs wrk with apt-get when root; see --help)
  mutants [NAMES] the must-kill mutants (tests/mutants/must_kill.toml), one at a time:
                  fails if one survives or its snippet moved (--check: snippets only)
  mutate [ARGS]   cosmic-ray over the guarantee modules (installs cosmic-ray in .venv);
                  prints the score and the survivors; --minutes N bounds the run
                  (default 30), --module NAME runs one of them; not part of CI
  services        only ensure the services (and the test database) are there
  lint            ruff check, ruff format --check, mypy
  help            this text

Every command but help and services first makes sure .venv exists and has payhook
installed (`pip install -e '.[dev]'`, redone whenever pyproject.toml changes).

Environment:
  PAYHOOK_TEST_DATABASE_URL  default postgresql+psycopg://postgres@127.0.0.1:5432/payhook_test
  PAYHOOK_TEST_REDIS_URL     default redis://127.0.0.1:6379/15
  PAYHOOK_WITH_RABBITMQ=1    also ensure RabbitMQ on 127.0.0.1:5672 (the default for
                             `test`; tests give each stack a vhost of its own)
  PAYHOOK_TEST_AMQP_URL      default amqp://guest:guest@127.0.0.1:5672//
  PAYHOOK_WITH_PGBOUNCER=1   also ensure the tests' PgBouncer (transaction pooling) on
                             127.0.0.1:6439 in front of that PostgreSQL (the default for
                             `test`; PgBouncer refuses to run as root: it runs as postgres)
  PAYHOOK_TEST_PGBOUNCER_URL default postgresql+psycopg://postgres@127.0.0.1:6439/payhook_test
  PAYHOOK_TEST_SCOPE         prefixes the databases and vhosts the tests make (parallel runs)
  PAYHOOK_PYTHON             Python (>= 3.11) to build .venv with (default: first of
                             python3.13, python3.12, python3.11, python3)
  CI                         when set, tests fail instead of skipping when a service
                             is missing (exports PAYHOOK_REQUIRE_SERVICES=1)
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ci_mode() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false", "False", "FALSE", "no")


def tested_environment() -> None:
    """What `test` (and the mutants, which run tests) set before ensuring the services."""
    os.environ.setdefault("PAYHOOK_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("PAYHOOK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    # The integration tests run on RabbitMQ and through PgBouncer too; =0 opts out locally.
    os.environ.setdefault("PAYHOOK_WITH_RABBITMQ", "1")
    os.environ.setdefault("PAYHOOK_WITH_PGBOUNCER", "1")
    if ci_mode():
        os.environ["PAYHOOK_REQUIRE_SERVICES"] = "1"


def services(_args: Sequence[str]) -> int:
    try:
        devservices.ensure_services()
    except ServiceError as error:
        say(str(error))
        return 1
    return 0


def test(args: Sequence[str]) -> int:
    tested_environment()
    if services(()) != 0:
        return 1
    os.execv(VENV_BIN / "pytest", ["pytest", *args])  # noqa: S606 (the venv's own pytest)


def mutants(args: Sequence[str]) -> int:
    tested_environment()
    if "--check" not in args and services(()) != 0:
        return 1
    return subprocess.call([str(VENV_BIN / "python"), "-m", "worker.tooling.mutants", *args])  # noqa: S603


def mutate(args: Sequence[str]) -> int:
    tested_environment()
    if services(()) != 0:
        return 1
    return subprocess.call([str(VENV_BIN / "python"), "-m", "worker.tooling.mutate", *args])  # noqa: S603


def lint(_args: Sequence[str]) -> int:
    failed = False
    ruff, mypy = str(VENV_BIN / "ruff"), str(VENV_BIN / "mypy")
    for title, command in (
        ("ruff check", [ruff, "check", "."]),
        ("ruff format --check", [ruff, "format", "--check", "."]),
        ("mypy", [mypy]),
    ):
        say(f"== {title}")
        failed |= subprocess.call(command) != 0  # noqa: S603
    say("lint: FAILED (see above)" if failed else "lint: ok")
    return 1 if failed else 0


def bench(args: Sequence[str]) -> int:
    """PostgreSQL and Redis ensured, then `payhook bench` (which installs wrk when root)."""
    try:
        devservices.ensure_postgresql()
        devservices.ensure_redis()
    except ServiceError as error:
        say(str(error))
        return 1
    os.execv(VENV_BIN / "payhook", ["payhook", "bench", *args])  # noqa: S606


def demo(args: Sequence[str]) -> int:
    os.execv(VENV_BIN / "payhook", ["payhook", "demo", *args])  # noqa: S606


def usage(_args: Sequence[str]) -> int:
    print(USAGE, end="")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": demo,
    "test": test,
    "bench": bench,
    "mutants": mutants,
    "mutate": mutate,
    "services": services,
    "lint": lint,
    "help": usage,
    "-h": usage,
    "--help": usage,
}


def main(argv: Sequence[str]) -> int:
    name, args = (argv[0], argv[1:]) if argv else ("help", [])
    command = COMMANDS.get(name)
    if command is None:
        say(f"./dev: unknown command '{name}'")
        print(USAGE, end="", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return command(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
