"""Shared test plumbing: real services are required under CI and skipped only locally."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES = os.environ.get("PAYHOOK_REQUIRE_SERVICES") == "1" or bool(os.environ.get("CI"))


def service_missing(what: str) -> None:
    """Fail under CI (a real-service test must never silently vanish), skip on a laptop."""
    message = f"{what} is not reachable; run the tests with ./dev test, which starts it"
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # only outside CI: REQUIRE_SERVICES is set there
