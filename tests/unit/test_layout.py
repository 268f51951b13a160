"""The rooms and what each may import: the dependency check of "How the code is laid out".

Read from the source (every import statement, including those inside functions), so that a
forbidden import fails here before anything runs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "tasks", "worker")

# room -> the payhook packages (prefixes) it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": ("tasks", "worker"),
    "tasks": ("worker",),
    # The receiver and the worker processes never import the tooling...
    "worker.web": ("worker.tooling", "worker.cli", "worker.taskqueue.flower"),
    "worker.taskqueue": ("worker.tooling", "worker.cli", "worker.web"),
    "worker.signing": ("worker.tooling", "worker.cli", "worker.web", "worker.taskqueue"),
    # ...and the modules both share stay below them.
    "worker.settings": ("worker.web", "worker.cli", "worker.taskqueue", "worker.tooling"),
    "worker.logs": ("worker.web", "worker.cli", "worker.taskqueue", "worker.tooling"),
    "worker.metrics": ("worker.web", "worker.cli", "worker.taskqueue", "worker.tooling"),
    "worker.runtime": ("worker.web", "worker.cli", "worker.tooling"),
}
# The domain is pure: the standard library and itself, nothing else.
THIRD_PARTY_IN_DOMAIN: tuple[str, ...] = ()
# The use cases never touch SQLAlchemy: the storage (tasks/storage, tasks/migrations) does.
SQL_FREE = ("tasks.processing", "tasks.confirming", "tasks.registering", "tasks.replaying")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module and name an import statement in `path` names (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = "." * node.level + (node.module or "")
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


ALL = modules()


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_are_absolute(module: str) -> None:
    relative = sorted(n for n in imports_of(ALL[module]) if n.startswith("."))
    assert relative == [], f"{module} imports {relative}: write them absolute, as the rules read"


@pytest.mark.parametrize("module", sorted(ALL))
def test_no_room_imports_what_it_must_not(module: str) -> None:
    rules = [bad for room, bad in FORBIDDEN.items() if inside(module, room)]
    imported = imports_of(ALL[module])
    broken = sorted(
        name for name in imported for bad in rules for prefix in bad if inside(name, prefix)
    )
    assert broken == [], f"{module} imports {broken}"


@pytest.mark.parametrize("module", sorted(m for m in ALL if inside(m, "domain")))
def test_the_domain_imports_only_the_standard_library_and_itself(module: str) -> None:
    outside = sorted(
        name
        for name in imports_of(ALL[module])
        if name.split(".")[0] not in sys.stdlib_module_names
        and not inside(name, "domain")
        and name.split(".")[0] != "__future__"
    )
    assert outside == [], f"{module} imports {outside}"


@pytest.mark.parametrize("module", [m for m in SQL_FREE if m in ALL])
def test_the_use_cases_import_no_sqlalchemy(module: str) -> None:
    sql = sorted(n for n in imports_of(ALL[module]) if inside(n, "sqlalchemy"))
    assert sql == [], f"{module} imports {sql}"


def test_worker_has_at_most_a_dozen_modules_at_its_root() -> None:
    root = sorted(p.name for p in (ROOT / "worker").glob("*.py"))
    assert len(root) <= 12, root


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from worker.tooling.bench import run\nimport sqlalchemy.exc\n")
    found = imports_of(planted)
    assert "worker.tooling.bench.run" in found
    assert "sqlalchemy.exc" in found
