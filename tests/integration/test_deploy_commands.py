"""Every command the deploy files run starts, as they would run it: an unprivileged user, a
read-only working directory (the image's root-owned /app, systemd's /), the environment the
files set (hosts, ports and placeholder secrets substituted), on real PostgreSQL and Redis.

No container engine here: the image is imitated (its entry point, user, working directory and
environment), not skipped.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.stack import free_port, fresh_database, fresh_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PAYHOOK = Path(sys.executable).parent / "payhook"  # the console script, the image's ENTRYPOINT
PORT_FLAGS = {"--port"}


@dataclass
class Command:
    where: str
    argv: list[str]
    env: dict[str, str]  # what the deploy file sets, placeholders still in


def k8s_commands() -> list[Command]:
    documents = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _yaml(p)]
    shared: dict[str, dict[str, str]] = {}
    for doc in documents:
        if doc.get("kind") == "ConfigMap":
            shared[f"configMap:{doc['metadata']['name']}"] = dict(doc["data"])
        elif doc.get("kind") == "Secret":
            shared[f"secret:{doc['metadata']['name']}"] = dict(doc["stringData"])
    found = []
    for doc in documents:
        for container in _containers(doc):
            if not str(container.get("image", "")).startswith("payhook"):
                continue
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    env |= shared[f"configMap:{source['configMapRef']['name']}"]
                if "secretRef" in source:
                    env |= shared[f"secret:{source['secretRef']['name']}"]
            for item in container.get("env", []):
                env[item["name"]] = str(item.get("value", ""))
            argv = [str(a) for a in container.get("args", container.get("command", []))]
            found.append(Command(f"k8s/{doc['metadata']['name']}", argv, env))
    return found


def compose_commands() -> list[Command]:
    (compose,) = _yaml(DEPLOY / "compose.yaml")
    found = []
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("payhook"):
            continue
        # env_file: deploy/.env, the operator's secrets (never committed): the same names as
        # the Kubernetes Secret, filled in below like its placeholders.
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        found.append(Command(f"compose/{name}", [str(a) for a in service["command"]], env))
    return found


def systemd_commands() -> list[Command]:
    found = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        lines = unit.read_text().splitlines()
        (start,) = [line.removeprefix("ExecStart=") for line in lines if "ExecStart=" in line]
        # systemd's specifiers: %i the instance, %% a literal % (Celery's %h, the host name).
        argv = shlex.split(start.replace("%i", "1").replace("%%", "%"))[1:]
        # EnvironmentFile=/etc/payhook/env is the operator's: the README's settings.
        found.append(Command(f"systemd/{unit.name}", argv, {}))
    return found


def dockerfile_commands() -> list[Command]:
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    return [Command("Dockerfile CMD", list(yaml.safe_load(cmd.group(1))), {})]


def _yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers" and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


DEPLOYMENTS = {
    "compose": compose_commands,
    "k8s": k8s_commands,
    "systemd": systemd_commands,
    "dockerfile": dockerfile_commands,
}
# Where each runs: the image's WORKDIR /app belongs to root; a system unit starts in /.
WORKING_DIRECTORY = {"compose": "app", "k8s": "app", "dockerfile": "app", "systemd": "/"}


def substituted(command: Command, database: str, broker: str) -> Command:
    """The deploy file's environment with this machine's hosts, free ports, real secrets."""
    filled = {
        "PAYHOOK_API_TOKEN": secrets.token_urlsafe(32),
        "PAYHOOK_STRIPE_WEBHOOK_SECRETS": "whsec_" + secrets.token_hex(16),
        "PAYHOOK_FLOWER_BASIC_AUTH": f"operator:{secrets.token_urlsafe(16)}",
    }
    env = {**command.env, **filled}  # every placeholder secret replaced, and set where unset
    env["PAYHOOK_DATABASE_URL"] = database
    env["PAYHOOK_BROKER_URL"] = broker
    assert all("CHANGE-ME" not in value for value in env.values())
    argv = list(command.argv)
    for n, arg in enumerate(argv[:-1]):
        if arg in PORT_FLAGS:
            argv[n + 1] = str(free_port())
    return Command(command.where, argv, env)


def unprivileged() -> list[str]:
    """Run as nobody, as the image's `payhook` user or a unit's User= would; a developer who
    is not root already is unprivileged.

    With one capability, to read (never to write) any file: this machine's Python may live in
    root's home (pyenv), where an image would have it in /usr/local. Writing is what is tested.
    """
    if os.geteuid() != 0:
        return []
    read_only = "+dac_read_search"
    return [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        f"--inh-caps={read_only}",
        f"--ambient-caps={read_only}",
    ]


@dataclass
class Running:
    command: Command
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def port(self) -> int:
        return int(self.command.argv[self.command.argv.index("--port") + 1])


def start(command: Command, cwd: Path, logs: Path, extra_env: dict[str, str]) -> Running:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env = {**base, "HOME": "/nonexistent", **command.env, **extra_env}
    safe = re.sub(r"[^a-z0-9]+", "-", command.where.lower())
    log = logs / f"{safe}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*unprivileged(), str(PAYHOOK), *command.argv],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Running(command, process, log)


def ready(running: Running) -> bool:
    """The command's own sign of life."""
    name = running.command.argv[0]
    text = running.text()
    if name == "worker":
        return "ready." in text
    if name == "beat":
        return "Sending due task sweep" in text
    url = f"http://127.0.0.1:{running.port()}"
    try:
        if name == "serve":
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        if name == "flower":
            user, _, password = running.command.env["PAYHOOK_FLOWER_BASIC_AUTH"].partition(":")
            return httpx.get(f"{url}/api/workers", auth=(user, password), timeout=2).is_success
    except httpx.TransportError:
        return False
    raise AssertionError(f"{running.command.where}: no readiness check for {name}")


def stop(processes: list[Running]) -> None:
    for running in processes:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
    for running in processes:
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


@pytest.fixture
def read_only_app() -> Iterator[Path]:
    """A root-owned, read-only working directory, like the image's /app (outside pytest's
    own temporary folder, which only its owner may enter)."""
    app = Path(tempfile.mkdtemp(prefix="payhook-app-"))
    app.chmod(0o555)
    yield app
    app.chmod(0o755)
    shutil.rmtree(app)


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_every_deploy_command_starts_unprivileged_from_a_read_only_directory(
    deployment: str, tmp_path: Path, read_only_app: Path
) -> None:
    commands = DEPLOYMENTS[deployment]()
    assert commands, f"{deployment}: no payhook command found"
    # No schema: the deploy's own migrate command must make it.
    database = fresh_database(f"payhook_deploy_{deployment}", migrate=False)
    broker = fresh_redis()
    cwd = read_only_app if WORKING_DIRECTORY[deployment] == "app" else Path("/")
    logs = tmp_path / "logs"  # written by this process: the commands inherit the open file
    logs.mkdir()

    filled = [substituted(c, database, broker) for c in commands]
    migrations = [c for c in filled if c.argv[0] == "migrate"]
    # The Dockerfile's CMD is the receiver: its schema comes from the image run as `migrate`.
    if not migrations:
        migrations = [Command(f"{deployment} migrate", ["migrate"], filled[0].env)]
    for migrate in migrations:
        done = start(migrate, cwd, logs, {})
        assert done.process.wait(timeout=120) == 0, f"{migrate.where}: {done.text()}"

    # Beat's sweep every second, so that it shows it runs; everything else as the file says.
    fast_beat = {"PAYHOOK_SWEEP_INTERVAL_S": "1"}
    services = [
        start(c, cwd, logs, fast_beat if c.argv[0] == "beat" else {})
        for c in filled
        if c.argv[0] != "migrate"
    ]
    try:
        waiting = list(services)
        deadline = time.monotonic() + 90
        while waiting and time.monotonic() < deadline:
            for running in list(waiting):
                code = running.process.poll()
                assert code is None, (
                    f"{running.command.where} exited {code}:\n{running.text()[-3000:]}"
                )
                if ready(running):
                    waiting.remove(running)
            time.sleep(0.2)
        assert not waiting, "not ready in 90 s: " + "; ".join(
            f"{r.command.where}:\n{r.text()[-2000:]}" for r in waiting
        )
    finally:
        stop(services)
    assert list(read_only_app.iterdir()) == []
