"""The ASGI app in-process, as the receivers' and the API's tests drive it: settings, a
harness whose publisher checks every publish comes after its commit, and helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from tasks.migrate import upgrade
from tasks.storage.tables import deliveries
from tests.fixture_files import fixture_bytes
from tests.unit.committed import CommittedPublisher
from tests.unit.common import NOW
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.stripe import sign_stripe
from worker.taskqueue.app import create_app
from worker.web.app import create_http_app

TS = int(NOW.timestamp())
TOKEN = "unit-test-api-token-7f3a-0123456789abcdef"
STRIPE_SECRET, ROTATED_SECRET = "whsec_unit_test_first", "whsec_unit_test_rotated"
SHOP_SECRET = "whsec_cGF5aG9vay11bml0LXRlc3Qtc2VjcmV0LTAxMjM0NTY="
SECRETS = (TOKEN, STRIPE_SECRET, ROTATED_SECRET, SHOP_SECRET, SHOP_SECRET.removeprefix("whsec_"))
MAX_BODY = 16 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STRIPE_EVENT = fixture_bytes("stripe/events/payment_intent.succeeded.json")
PI = "pi_000000000000000000000000"


@dataclass
class Harness:
    client: TestClient
    runtime: ProcessRuntime
    publisher: CommittedPublisher

    @property
    def published(self) -> list[int]:
        return self.publisher.published

    def deliveries(self) -> int:
        with self.runtime.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(deliveries)).scalar_one())

    def stripe(self, body: bytes = STRIPE_EVENT, **headers: str) -> Response:
        signed = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET, TS)}
        return self.client.post("/webhooks/stripe", content=body, headers={**signed, **headers})

    def api(self, method: str, path: str, **kwargs: Any) -> Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "api_token": TOKEN,
        "stripe_webhook_secrets": f"{STRIPE_SECRET},{ROTATED_SECRET}",
        "standard_webhook_secrets": f"shop={SHOP_SECRET}",
        "max_body_bytes": MAX_BODY,
        **overrides,
    }
    return Settings(**values)


def harness_for(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *, migrate: bool = True
) -> Harness:
    if migrate:
        upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    publisher = CommittedPublisher(settings.database)
    harness = Harness(TestClient(create_http_app(runtime)), runtime, publisher)
    # No broker in unit tests: record what would have been published, once committed.
    monkeypatch.setattr(runtime, "publish", publisher)
    monkeypatch.setattr(runtime, "now", lambda: NOW)
    return harness


def assert_error(response: Response, status: int) -> str:
    """One JSON line {"error": why}, and no secret in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "\n" not in response.text
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert body["error"]
    for secret in SECRETS:
        assert secret not in response.text
    assert "Traceback" not in response.text
    reason: str = body["error"]
    return reason


def standard_event(event_type: str = "payment.succeeded", **data: Any) -> bytes:
    fields = {"payment_reference": "pay_1", "amount": 1500, "currency": "eur", **data}
    return json.dumps({"type": event_type, "data": fields}).encode()


def create_order(app: Harness, reference: str = "order-1", total: int = 2000) -> Response:
    return app.api(
        "POST", "/api/orders", json={"reference": reference, "total": total, "currency": "usd"}
    )


def create_payment(
    app: Harness, order_reference: str = "order-1", reference: str = PI, amount: int = 2000
) -> Response:
    payment = {
        "order_reference": order_reference,
        "provider": "stripe",
        "provider_reference": reference,
        "amount": amount,
        "currency": "usd",
    }
    return app.api("POST", "/api/payments", json=payment)
