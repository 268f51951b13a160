"""The CLI imports a command's module only once it knows the command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from kombu.exceptions import OperationalError as BrokerUnreachable

from worker.cli import _parser, entry_point, main
from worker.cli.unreachable import explain
from worker.settings import Settings

# What `payhook worker` and `payhook beat` must not load before they fork: every prefork child
# would carry it.
NOT_FOR_WORKERS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "flower",
    "tornado",
    "httpx",
    "stripe",
    "Adyen",
    "standardwebhooks",
    "worker.web",
    "worker.signing",
    "worker.tooling",
)


def commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_command_names_a_function_that_exists(command: str) -> None:
    target = commands()[command].get_default("run")
    assert isinstance(target, str)
    assert callable(entry_point(target))


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_worker_loads_no_web_framework_sdk_or_flower(command: str) -> None:
    script = (
        "import json, sys\n"
        "from worker.cli import _parser, entry_point\n"
        f"entry_point(_parser().parse_args([{command!r}]).run)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True
        ).stdout
    )
    assert "celery" in loaded
    assert [
        m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_WORKERS)
    ] == []


@pytest.mark.parametrize("command", [["deliveries"], ["stats"], ["migrate"], ["payment", "pi_1"]])
def test_an_unreachable_database_is_one_line_naming_it_without_its_password(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1 of the loopback: the connection is refused at once.
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", "postgresql+psycopg://ops:s3cret-pw@127.0.0.1:1/pay")
    assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("payhook: the database at postgresql+psycopg://ops:***@127.0.0.1:1/pay")
    assert "\n" not in err
    assert "s3cret-pw" not in err
    assert "Traceback" not in err


def test_an_unreachable_broker_is_one_line_naming_it_without_its_password() -> None:
    settings = Settings(broker_url="redis://:b-secret@127.0.0.1:1/0")
    line = explain(
        BrokerUnreachable("Error 111 connecting to 127.0.0.1:1. Connection refused."), settings
    )
    assert line.startswith("payhook: the broker at redis://:***@127.0.0.1:1/0 is unreachable")
    assert "b-secret" not in line
