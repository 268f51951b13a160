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


def test_fields_are_masked_by_name_and_by_content_on_every_line(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second line goes the same way as the first (what a field's name says is kept)."""
    configure_logging(json=True)
    log = logging.getLogger("payhook.test")
    fields = {
        "customer_email": EMAIL,  # personal by its name
        "webhook_secret": "whsec_abc",  # secret by its name
        "note": f"card {CARD} of {EMAIL}",  # scanned
        "transition": "pending->succeeded",  # payhook's own
    }
    log.info("first", extra=fields)
    log.info("second", extra=fields)

    for line in capsys.readouterr().err.splitlines():
        record = json.loads(line)
        assert record["customer_email"] == "[masked]"
        assert record["webhook_secret"] == "[redacted]"
        assert record["note"] == "card ****4242 of j***@example.com"
        assert record["transition"] == "pending->succeeded"
