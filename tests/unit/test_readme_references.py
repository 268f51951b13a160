"""The README names the tests that defend each guarantee: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `tests/…/test_x.py::test_name[param]`, or `::test_name` after a named file on the same line.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)(?:\[[^\]`]*\])?`|`(tests/[\w/]+\.py)`")


def references(text: str) -> list[tuple[str, str | None]]:
    """(file, test function or None) for each test the text names, in order."""
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(text):
        file, name, bare = match.groups()
        if bare:
            current = bare
            found.append((bare, None))
            continue
        current = file or current
        if current is not None:
            found.append((current, name))
    return found


def defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_the_readme_names_exists() -> None:
    named = references((ROOT / "README.md").read_text())
    assert len(named) > 10  # the guarantees section names its tests
    missing = [
        f"{file}::{name}" if name else file
        for file, name in named
        if not (ROOT / file).is_file() or (name is not None and name not in defined(ROOT / file))
    ]
    assert missing == []


def test_a_renamed_test_is_found_missing() -> None:
    text = (
        "`tests/unit/test_readme_references.py::test_that_was_renamed` and"
        " `::test_a_renamed_test_is_found_missing`"
    )
    named = references(text)
    assert named == [
        ("tests/unit/test_readme_references.py", "test_that_was_renamed"),
        ("tests/unit/test_readme_references.py", "test_a_renamed_test_is_found_missing"),
    ]
    here = defined(ROOT / "tests/unit/test_readme_references.py")
    assert "test_that_was_renamed" not in here
