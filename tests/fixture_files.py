"""Read the test fixtures copied into tests/fixtures (see tests/fixtures/MANIFEST.md)."""

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(rel: str) -> bytes:
    """Return the exact bytes of a fixture file, `rel` relative to tests/fixtures."""
    return (FIXTURES / rel).read_bytes()


def fixture_json(rel: str) -> Any:
    """Return a fixture file parsed as JSON, `rel` relative to tests/fixtures."""
    return json.loads(fixture_bytes(rel))
