"""Small, strict readers for provider JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from domain.events import MalformedEvent
from domain.money import InvalidCurrency, normalize_currency


def load_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object, or say in one line why the body is not one."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedEvent(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise MalformedEvent("body is not a JSON object")
    return value


def text(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{where}.{name} must be a non-empty string")
    return value


def optional_text(obj: dict[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{where}.{name} must be a non-empty string")
    return value


def mapping(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where}.{name} must be an object")
    return value


def minor_units(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    # bool is an int in Python; an amount never is.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEvent(f"{where}.{name} must be a non-negative integer (minor units)")
    return value


def currency(obj: dict[str, Any], name: str, where: str) -> str:
    try:
        return normalize_currency(text(obj, name, where))
    except InvalidCurrency as error:
        raise MalformedEvent(f"{where}.{name}: {error}") from None
