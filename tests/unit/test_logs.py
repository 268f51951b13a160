"""Logs mask personal data everywhere, tracebacks included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from worker.logs import configure_logging

EMAIL = "jane.doe@example.com"
CARD = "4242 4242 4242 4242"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_a_traceback_is_masked_like_a_message(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json=True)
    log = logging.getLogger("payhook.test")
    try:
        raise ValueError(f"no payment for {EMAIL} paid with {CARD}")
    except ValueError:
        log.exception("delivery failed permanently for %s", EMAIL)

    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["event"] == "delivery failed permanently for j***@example.com"
    assert "ValueError" in record["exception"]
    assert "j***@example.com" in record["exception"]
    assert "****4242" in record["exception"]
    assert EMAIL not in line
    assert CARD not in line
