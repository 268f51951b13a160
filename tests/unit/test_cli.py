"""The CLI imports a command's module only once it knows the command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from worker.cli import _parser, entry_point

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
