"""Structured logs: one JSON object per line, delivery fields on every line, no personal data."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from celery.signals import task_postrun, task_prerun

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_CARD = re.compile(r"\b(?:\d[ -]?){8,15}(\d{4})\b")
# Keys whose values are personal data wherever they appear.
_PERSONAL = re.compile(r"(^|_)(email|name|phone|address|card|iban|ssn)($|_)", re.IGNORECASE)
_SECRETS = re.compile(r"(secret|token|password|signature|authorization|hmac|key)", re.IGNORECASE)


def mask(value: str) -> str:
    """Hide e-mail local parts and every card digit but the last four."""
    value = _EMAIL.sub(r"\1***@\2", value)
    return _CARD.sub(r"****\1", value)


# Fields payhook writes itself and that hold no personal data: not scanned.
_OWN_FIELDS = frozenset(
    {"timestamp", "level", "logger", "task", "task_id", "kind", "reason", "provider", "transition"}
)
_OWN, _SECRET, _PERSONAL_DATA, _SCANNED = range(4)


@functools.lru_cache(maxsize=1024)
def _treatment(key: str) -> int:
    """What a field's name says to do with its value; the names are few, so each is read once."""
    if key in _OWN_FIELDS:
        return _OWN
    if _SECRETS.search(key):
        return _SECRET
    if _PERSONAL.search(key):
        return _PERSONAL_DATA
    return _SCANNED


def _mask_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key == "event":
            if isinstance(value, str):
                event[key] = mask(value)
            continue
        treatment = _treatment(key)
        if treatment == _SECRET:
            event[key] = "[redacted]"
        elif treatment == _PERSONAL_DATA:
            event[key] = "[masked]"
        elif treatment == _SCANNED and isinstance(value, str):
            event[key] = mask(value)
    return event


def _mask_exception(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A traceback, once rendered to text, goes through the same masking as a message."""
    for key in ("exception", "stack"):
        value = event.get(key)
        if isinstance(value, str):
            event[key] = mask(value)
    return event


def configure_logging(*, json: bool = True, level: int = logging.INFO) -> None:
    """Route the standard library's and structlog's records through one renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_exception,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    """Every line a task logs names the task and, for deliveries, the delivery."""
    structlog.contextvars.clear_contextvars()
    fields: dict[str, Any] = {"task_id": task_id, "task": getattr(task, "name", None)}
    if args and getattr(task, "name", "") == "payhook.process_delivery":
        fields["delivery_id"] = args[0]
    structlog.contextvars.bind_contextvars(**fields)


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
