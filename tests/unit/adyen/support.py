"""Shared by the Adyen tests: keys, fixtures, the receiver harness and item builders."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from tasks.migrate import upgrade
from tasks.processing import Processed, process_delivery
from tasks.registering import create_order, create_payment
from tasks.storage import queries
from tasks.storage.tables import deliveries
from tests.fixture_files import fixture_json
from tests.unit.committed import CommittedPublisher
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.adyen import expected_signature, verify_adyen_item
from worker.signing.errors import SignatureError
from worker.taskqueue.app import create_app
from worker.web.app import create_http_app

VECTORS: dict[str, Any] = fixture_json("adyen/hmac/vectors.json")
ITEM_VECTORS: list[dict[str, Any]] = VECTORS["notification_item_vectors"]
SLASH_VECTOR = next(v for v in ITEM_VECTORS if "item_files" in v)
SLASH_KEY: str = SLASH_VECTOR["key_hex"]
SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "amount.value",
    "amount.currency",
    "eventCode",
    "success",
)
KEY = "A1" * 32  # the receiver's key in these tests (Adyen's keys are 32 bytes, hex)
OLD_KEY = "B2" * 32


def signed_vectors() -> list[tuple[str, dict[str, Any], str]]:
    """(name, item, key) of every published vector whose item carries or has a signature."""
    cases = []
    for vector in ITEM_VECTORS:
        if "item" in vector and "expected_hmac" in vector:
            item = copy.deepcopy(vector["item"])
            item.setdefault("additionalData", {})["hmacSignature"] = vector["expected_hmac"]
            cases.append((vector["name"], item, vector["key_hex"]))
    for name in SLASH_VECTOR["item_files"]:
        cases.append((name, fixture_json(f"adyen/hmac/{name}"), SLASH_KEY))
    return cases


SIGNED = signed_vectors()
SIGNED_IDS = [name for name, _, _ in SIGNED]


def hmac_b64(key_hex: str, data: str) -> str:
    """An independent HMAC (no payhook, no Adyen package) of a data-to-sign string."""
    digest = hmac.new(bytes.fromhex(key_hex), data.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def altered(item: dict[str, Any], field: str) -> dict[str, Any]:
    """A copy of `item` with one signed field changed (and its signature left as it was)."""
    changed = copy.deepcopy(item)
    target, name = (
        (changed["amount"], field[7:]) if field.startswith("amount.") else (changed, field)
    )
    value = target.get(name)
    if isinstance(value, int):
        target[name] = value + 1
    elif name == "success":
        target[name] = "false" if value == "true" else "true"
    else:
        target[name] = (value or "") + "x"
    return changed


def reason_of(item: dict[str, Any], keys: list[str]) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_adyen_item(item, keys)
    return caught.value.reason


# --- the receiver, and processing what it stored ------------------------------------------


def fixture_item(name: str) -> dict[str, Any]:
    request = fixture_json(f"adyen/notifications/{name}")
    item: dict[str, Any] = request["notificationItems"][0]["NotificationRequestItem"]
    return item


class PublishingRecorder(ProcessRuntime):
    """The real runtime, except that publishing only records the (committed) delivery ids."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, create_app(settings))
        self.publisher = CommittedPublisher(settings.database)
        self.published = self.publisher.published

    def publish(self, delivery_id: int) -> None:
        self.publisher(delivery_id)


@dataclass
class Receiver:
    client: TestClient
    runtime: PublishingRecorder

    @property
    def published(self) -> list[int]:
        return self.runtime.published

    def post(self, body: bytes | dict[str, Any], **headers: str) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/webhooks/adyen",
            content=content,
            headers={"content-type": "application/json", **headers},
        )

    def stored(self) -> list[tuple[int, str, str, bytes]]:
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.event_id, deliveries.c.headers)
                .where(deliveries.c.provider == "adyen")
                .order_by(deliveries.c.id)
            ).all()
            result = []
            for row in rows:
                raw = queries.delivery_raw(conn, row.id)
                assert raw is not None
                result.append((row.id, row.event_id, row.headers, raw[1]))
        return result

    def count(self) -> int:
        with self.runtime.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(deliveries)).scalar_one())

    def process(self, delivery_id: int) -> Processed:
        rt = self.runtime
        return process_delivery(delivery_id, rt.unit_of_work(), rt.now(), rt.policy, rt.reading)

    def register(self, reference: str, amount: int, currency: str = "EUR") -> int:
        now = datetime.now(UTC)
        order = f"order-{reference}"
        uow = self.runtime.unit_of_work
        create_order(uow(), reference=order, total=amount, currency=currency, now=now)
        return create_payment(
            uow(),
            order_reference=order,
            provider="adyen",
            provider_reference=reference,
            amount=amount,
            currency=currency,
            now=now,
        )

    def payment(self, payment_id: int) -> dict[str, Any]:
        with self.runtime.engine.connect() as conn:
            view = queries.payment(conn, payment_id)
        assert view is not None
        return view

    def order(self, reference: str) -> dict[str, Any]:
        with self.runtime.engine.connect() as conn:
            view = queries.order(conn, reference)
        assert view is not None
        return view


@contextmanager
def make_receiver(tmp_path: Path, keys: str, **settings: Any) -> Iterator[Receiver]:
    config = Settings(
        data_dir=tmp_path,
        database_url="",
        broker_url="",
        adyen_hmac_keys=SecretStr(keys),
        **settings,
    )
    upgrade(config.database)
    runtime = PublishingRecorder(config)
    with TestClient(create_http_app(runtime)) as client:
        yield Receiver(client, runtime)
    runtime.engine.dispose()
    assert runtime.publisher.uncommitted == [], "published before the commit"


def signed(item: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    """The item re-signed with `key` (the fixtures' own signatures verify with no known key)."""
    item = copy.deepcopy(item)
    item.setdefault("additionalData", {})["hmacSignature"] = expected_signature(item, key)
    return item


def request_of(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "live": "false",
        "notificationItems": [{"NotificationRequestItem": item} for item in items],
    }


def authorisation(reference: str, amount: int, psp: str, currency: str = "EUR") -> dict[str, Any]:
    item = fixture_item("authorisation-true.json")
    item.update(merchantReference=reference, pspReference=psp)
    item["amount"]["value"] = amount
    item["amount"]["currency"] = currency
    return item
