"""What can be checked of deploy/ here: it parses, runs real commands, sets real settings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import _parser
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Commands that hand their unknown options to Celery, as the README says.
PASSES_OPTIONS_ON = {"worker", "beat"}


def yaml_documents() -> list[tuple[Path, Any]]:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    return [(path, doc) for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def payhook_commands() -> list[tuple[str, list[str]]]:
    """Every argument list a deploy file hands to `payhook`, with where it comes from."""
    found: list[tuple[str, list[str]]] = []

    def walk(where: str, node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("image", "")).startswith("payhook"):
                argv = node.get("command", node.get("args"))
                assert isinstance(argv, list), f"{where}: a payhook container without a command"
                found.append((where, [str(arg) for arg in argv]))
            for key, value in node.items():
                if not str(key).startswith("x-"):  # compose extension fields: templates only
                    walk(where, value)
        elif isinstance(node, list):
            for item in node:
                walk(where, item)

    for path, doc in yaml_documents():
        if path.parent.name == "prometheus":
            continue
        walk(path.name, doc)
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart="))
                assert argv[0].endswith("/payhook"), f"{unit.name} runs {argv[0]}"
                found.append((unit.name, argv[1:]))
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    found.append(("Dockerfile", yaml.safe_load(cmd.group(1))))
    return found


def test_every_deploy_file_parses() -> None:
    assert len(yaml_documents()) >= 8


@pytest.mark.parametrize(("where", "argv"), payhook_commands(), ids=lambda v: str(v))
def test_every_command_is_a_real_payhook_command(where: str, argv: list[str]) -> None:
    # systemd's %i and %%h are filled in by systemd, not by payhook.
    argv = [arg.replace("%i", "1").replace("%%h", "host") for arg in argv]
    args, extra = _parser().parse_known_args(argv)
    assert args.command in PASSES_OPTIONS_ON or not extra, f"{where}: {extra} unknown"


def test_every_setting_a_deploy_file_passes_exists() -> None:
    names = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            names |= set(re.findall(r"\bPAYHOOK_([A-Z0-9_]+)\b", path.read_text()))
    known = {name.upper() for name in Settings.model_fields}
    assert names, "no settings found in deploy/"
    assert names <= known, f"unknown settings: {sorted(names - known)}"


def test_the_image_installs_payhook_the_way_the_readme_does() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "RUN pip install ." in dockerfile
    assert "pip install ." in readme
    assert 'ENTRYPOINT ["payhook"]' in dockerfile
