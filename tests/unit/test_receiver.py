"""The ASGI app in-process: webhooks are verified, stored, published and answered; the API."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from tasks.migrate import upgrade
from tasks.processing import process_delivery
from tasks.storage.tables import deliveries
from tests.fixture_files import fixture_bytes
from tests.unit.committed import CommittedPublisher
from tests.unit.common import NOW
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.standard import sign_standard
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


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = harness_for(make_settings(tmp_path), monkeypatch)
    yield harness
    harness.runtime.engine.dispose()
    assert harness.publisher.uncommitted == [], "published before the commit"


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


# --- Stripe webhooks ----------------------------------------------------------------------


def test_signed_stripe_delivery_is_stored_published_and_accepted(app: Harness) -> None:
    response = app.stripe()

    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    assert response.json() == {"delivery_id": delivery_id}
    assert app.published == [delivery_id]
    stored = app.api("GET", f"/api/deliveries/{delivery_id}").json()
    assert stored["provider"] == "stripe"
    assert stored["event_id"] == json.loads(STRIPE_EVENT)["id"]
    assert stored["event_type"] == "payment_intent.succeeded"
    assert stored["status"] == "received"
    assert stored["outcome"] is None


def test_delivery_signed_with_the_rotated_secret_is_accepted(app: Harness) -> None:
    signature = sign_stripe(STRIPE_EVENT, ROTATED_SECRET, TS)
    response = app.client.post(
        "/webhooks/stripe", content=STRIPE_EVENT, headers={"Stripe-Signature": signature}
    )
    assert response.status_code == 202
    assert app.deliveries() == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Stripe-Signature": ""},
        {"Stripe-Signature": sign_stripe(STRIPE_EVENT, "whsec_forged", TS)},
        {"Stripe-Signature": f"t={TS},v1={'0' * 64}"},
        {"Stripe-Signature": "garbage"},
    ],
    ids=["missing", "empty", "wrong-secret", "forged-hex", "malformed"],
)
def test_missing_or_forged_signature_is_refused_and_nothing_stored(
    app: Harness, headers: dict[str, str]
) -> None:
    response = app.client.post("/webhooks/stripe", content=STRIPE_EVENT, headers=headers)

    assert_error(response, 401)
    assert app.deliveries() == 0
    assert app.published == []


def test_a_signed_body_altered_in_transit_is_refused(app: Harness) -> None:
    signature = sign_stripe(STRIPE_EVENT, STRIPE_SECRET, TS)
    altered = STRIPE_EVENT.replace(b'"amount_received": 2000', b'"amount_received": 1')
    assert altered != STRIPE_EVENT
    response = app.client.post(
        "/webhooks/stripe", content=altered, headers={"Stripe-Signature": signature}
    )
    assert_error(response, 401)
    assert app.deliveries() == 0


@pytest.mark.parametrize("offset", [-301, 301], ids=["301s-old", "301s-ahead"])
def test_timestamp_outside_the_tolerance_is_refused(app: Harness, offset: int) -> None:
    signature = sign_stripe(STRIPE_EVENT, STRIPE_SECRET, TS + offset)
    response = app.client.post(
        "/webhooks/stripe", content=STRIPE_EVENT, headers={"Stripe-Signature": signature}
    )
    assert assert_error(response, 401) == "timestamp outside the tolerance"
    assert app.deliveries() == 0


@pytest.mark.parametrize("offset", [-300, 300], ids=["300s-old", "300s-ahead"])
def test_timestamp_at_the_edge_of_the_tolerance_is_accepted(app: Harness, offset: int) -> None:
    signature = sign_stripe(STRIPE_EVENT, STRIPE_SECRET, TS + offset)
    response = app.client.post(
        "/webhooks/stripe", content=STRIPE_EVENT, headers={"Stripe-Signature": signature}
    )
    assert response.status_code == 202


def test_body_of_exactly_the_limit_is_accepted(app: Harness) -> None:
    # Trailing whitespace keeps the JSON valid and the body exactly at the limit.
    body = STRIPE_EVENT + b" " * (MAX_BODY - len(STRIPE_EVENT))
    assert len(body) == MAX_BODY
    assert app.stripe(body).status_code == 202


def test_body_over_the_limit_with_content_length_is_refused(app: Harness) -> None:
    body = STRIPE_EVENT + b" " * (MAX_BODY + 1 - len(STRIPE_EVENT))

    response = app.stripe(body)

    assert_error(response, 413)
    assert app.deliveries() == 0
    assert app.published == []


def test_streamed_body_over_the_limit_is_refused(app: Harness) -> None:
    chunks = [b" " * 4096] * (MAX_BODY // 4096 + 1)
    signature = sign_stripe(b"".join(chunks), STRIPE_SECRET, TS)

    response = app.client.post(
        "/webhooks/stripe", content=iter(chunks), headers={"Stripe-Signature": signature}
    )

    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert_error(response, 413)
    assert app.deliveries() == 0


@pytest.mark.parametrize(
    "body",
    [b"{this is not json", b"[]", json.dumps({"id": "evt_1", "type": "x"}).encode()],
    ids=["not-json", "array", "no-data"],
)
def test_a_signed_body_that_does_not_parse_is_stored_and_recorded_malformed(
    app: Harness, body: bytes
) -> None:
    response = app.stripe(body)

    assert response.status_code == 202, response.text  # what was signed is kept
    delivery_id = response.json()["delivery_id"]
    assert app.published == [delivery_id]
    rt = app.runtime
    outcome = process_delivery(delivery_id, rt.unit_of_work(), NOW, rt.policy).outcome
    assert (outcome.kind.value, outcome.reason and outcome.reason.value) == (
        "rejected",
        "malformed_event",
    )
    stored = app.api("GET", f"/api/deliveries/{delivery_id}").json()
    # Its own event id when the body names one plainly, else a digest of the body.
    assert stored["event_id"].startswith("evt_1" if b"evt_1" in body else "unparsed:")


def test_an_unsigned_body_that_does_not_parse_is_refused_and_not_stored(app: Harness) -> None:
    response = app.client.post(
        "/webhooks/stripe", content=b"{not json", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert_error(response, 401)
    assert app.deliveries() == 0


def test_stripe_without_configured_secrets_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = harness_for(make_settings(tmp_path, stripe_webhook_secrets=""), monkeypatch)
    assert_error(harness.stripe(), 404)


def test_database_unavailable_answers_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"sqlite:///{tmp_path}/no/such/dir/payhook.db"
    harness = harness_for(make_settings(tmp_path, database_url=missing), monkeypatch, migrate=False)

    response = harness.stripe()

    assert assert_error(response, 503).startswith("database unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert harness.published == []


def test_a_failing_broker_still_answers_202_and_keeps_the_delivery(
    app: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(delivery_id: int) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(app.runtime, "publish", broker_down)

    response = app.stripe()

    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    assert app.api("GET", f"/api/deliveries/{delivery_id}").status_code == 200
    assert app.deliveries() == 1


# --- Standard Webhooks ---------------------------------------------------------------------


def test_signed_standard_delivery_is_accepted(app: Harness) -> None:
    body = standard_event()
    headers = sign_standard(body, "msg_1", SHOP_SECRET, TS)

    response = app.client.post("/webhooks/standard/shop", content=body, headers=headers)

    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    assert app.published == [delivery_id]
    stored = app.api("GET", f"/api/deliveries/{delivery_id}").json()
    assert (stored["provider"], stored["event_id"], stored["event_type"]) == (
        "shop",
        "msg_1",
        "payment.succeeded",
    )


def test_unknown_standard_source_is_not_found(app: Harness) -> None:
    body = standard_event()
    headers = sign_standard(body, "msg_1", SHOP_SECRET, TS)
    response = app.client.post("/webhooks/standard/elsewhere", content=body, headers=headers)
    assert_error(response, 404)
    assert app.deliveries() == 0


def test_standard_delivery_with_a_wrong_signature_is_refused(app: Harness) -> None:
    body = standard_event()
    other_secret = "whsec_" + "b3RoZXItc2VjcmV0LW5vdC1jb25maWd1cmVk"
    headers = sign_standard(body, "msg_1", other_secret, TS)
    response = app.client.post("/webhooks/standard/shop", content=body, headers=headers)
    assert_error(response, 401)
    assert app.deliveries() == 0


def test_a_signed_standard_delivery_of_another_schema_is_stored_under_its_webhook_id(
    app: Harness,
) -> None:
    body = json.dumps({"type": "payment.succeeded", "data": {"amount": "15.00"}}).encode()
    headers = sign_standard(body, "msg_1", SHOP_SECRET, TS)
    response = app.client.post("/webhooks/standard/shop", content=body, headers=headers)
    assert response.status_code == 202, response.text
    stored = app.api("GET", f"/api/deliveries/{response.json()['delivery_id']}").json()
    assert (stored["provider"], stored["event_id"]) == ("shop", "msg_1")


def test_error_bodies_never_echo_the_signature_header(app: Harness) -> None:
    forged = f"t={TS},v1={STRIPE_SECRET}"
    response = app.client.post(
        "/webhooks/stripe", content=STRIPE_EVENT, headers={"Stripe-Signature": forged}
    )
    assert_error(response, 401)


# --- API: authentication ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
def test_api_without_the_right_bearer_token_is_unauthorized(
    app: Harness, headers: dict[str, str]
) -> None:
    assert_error(app.client.get("/api/deliveries", headers=headers), 401)
    order = {"reference": "o-1", "total": 100, "currency": "USD"}
    assert_error(app.client.post("/api/orders", json=order, headers=headers), 401)


def test_api_is_closed_when_no_token_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = harness_for(make_settings(tmp_path, api_token=None), monkeypatch)
    assert_error(harness.client.get("/api/deliveries", headers=AUTH), 401)


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "bearer  "])
def test_an_empty_configured_token_keeps_the_api_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, authorization: str
) -> None:
    harness = harness_for(make_settings(tmp_path, api_token=""), monkeypatch)
    response = harness.client.get("/api/deliveries", headers={"Authorization": authorization})
    assert "closed" in assert_error(response, 401)


# --- API: orders and payments -------------------------------------------------------------


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


def test_order_is_created_then_a_duplicate_reference_conflicts(app: Harness) -> None:
    created = create_order(app)
    assert created.status_code == 201
    order = created.json()
    assert order["reference"] == "order-1"
    assert order["currency"] == "USD"
    assert order["status"] == "pending"
    assert order["payments"] == []

    assert_error(create_order(app), 409)


def test_order_is_read_back_and_an_unknown_one_is_not_found(app: Harness) -> None:
    create_order(app)
    assert app.api("GET", "/api/orders/order-1").json()["total"] == 2000
    assert_error(app.api("GET", "/api/orders/nope"), 404)


@pytest.mark.parametrize(
    "order",
    [
        {"reference": "o", "total": -1, "currency": "USD"},
        {"reference": "o", "total": 1, "currency": "dollars"},
        {"reference": "", "total": 1, "currency": "USD"},
        {"total": 1, "currency": "USD"},
    ],
    ids=["negative-total", "bad-currency", "empty-reference", "no-reference"],
)
def test_invalid_order_is_unprocessable(app: Harness, order: dict[str, Any]) -> None:
    assert_error(app.api("POST", "/api/orders", json=order), 422)


def test_payment_is_created_with_its_currency_in_upper_case(app: Harness) -> None:
    create_order(app)

    created = create_payment(app)

    assert created.status_code == 201
    payment = created.json()
    assert payment["currency"] == "USD"
    assert payment["state"] == "pending"
    assert payment["order_reference"] == "order-1"
    assert app.api("GET", f"/api/payments/{payment['id']}").json()["currency"] == "USD"
    assert app.api("GET", "/api/orders/order-1").json()["payments"][0]["id"] == payment["id"]


def test_payment_for_an_unknown_order_is_not_found(app: Harness) -> None:
    assert_error(create_payment(app, order_reference="nope"), 404)


def test_a_second_payment_with_the_same_provider_reference_conflicts(app: Harness) -> None:
    create_order(app)
    create_payment(app)
    assert_error(create_payment(app), 409)


def test_unknown_payment_is_not_found(app: Harness) -> None:
    assert_error(app.api("GET", "/api/payments/999"), 404)


# --- API: manual confirmation -------------------------------------------------------------


def test_manual_confirmation_answers_200_then_409(app: Harness) -> None:
    create_order(app)
    payment_id = create_payment(app).json()["id"]

    first = app.api("POST", f"/api/payments/{payment_id}/confirm")
    second = app.api("POST", f"/api/payments/{payment_id}/confirm")

    assert first.status_code == 200
    assert first.json()["status"] == "confirmed"
    assert first.json()["payment"]["state"] == "confirmed"
    assert app.api("GET", "/api/orders/order-1").json()["status"] == "paid"
    assert second.status_code == 409
    assert second.json()["status"] == "already_confirmed"
    assert "error" in second.json()


def test_confirming_an_unknown_payment_is_not_found(app: Harness) -> None:
    assert_error(app.api("POST", "/api/payments/999/confirm"), 404)


def test_the_same_idempotency_key_replays_the_first_answer(app: Harness) -> None:
    create_order(app)
    payment_id = create_payment(app).json()["id"]
    path = f"/api/payments/{payment_id}/confirm"

    first = app.api("POST", path, headers={"Idempotency-Key": "k-1"})
    replay = app.api("POST", path, headers={"Idempotency-Key": "k-1"})

    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    # Without the key, the second confirmation is the conflict it really is.
    assert app.api("POST", path).status_code == 409


def test_the_same_idempotency_key_with_another_body_is_unprocessable(app: Harness) -> None:
    create_order(app)
    payment_id = create_payment(app).json()["id"]
    path = f"/api/payments/{payment_id}/confirm"
    app.api("POST", path, headers={"Idempotency-Key": "k-1"})

    reused = app.api("POST", path, headers={"Idempotency-Key": "k-1"}, json={"note": "again"})

    assert_error(reused, 422)


# --- API: deliveries ----------------------------------------------------------------------


def post_stripe_events(app: Harness, count: int) -> list[int]:
    ids = []
    for number in range(count):
        document = json.loads(STRIPE_EVENT)
        document["id"] = f"evt_{number}"
        response = app.stripe(json.dumps(document).encode())
        assert response.status_code == 202
        ids.append(response.json()["delivery_id"])
    return ids


def test_delivery_shape_is_the_documented_one(app: Harness) -> None:
    create_order(app)
    create_payment(app)
    (delivery_id,) = post_stripe_events(app, 1)

    before = app.api("GET", f"/api/deliveries/{delivery_id}").json()
    process_delivery(delivery_id, app.runtime.unit_of_work(), NOW, app.runtime.policy)
    after = app.api("GET", f"/api/deliveries/{delivery_id}").json()

    keys = {"id", "provider", "event_id", "event_type", "received_at", "status", "attempts"}
    assert set(before) == keys | {"outcome"}
    assert before["outcome"] is None
    assert set(after) == keys | {"outcome"}
    assert set(after["outcome"]) == {
        "kind",
        "reason",
        "transition",
        "payment_id",
        "duplicate_of",
        "recorded_at",
    }
    assert after["outcome"]["kind"] == "applied"
    assert after["outcome"]["transition"] == "pending->confirmed"
    assert after["status"] == "processed"
    assert datetime.fromisoformat(after["received_at"]) == NOW


def test_unknown_delivery_is_not_found(app: Harness) -> None:
    assert_error(app.api("GET", "/api/deliveries/999"), 404)


def test_deliveries_are_listed_newest_first_and_filtered(app: Harness) -> None:
    stripe_ids = post_stripe_events(app, 2)
    body = standard_event()
    shop = app.client.post(
        "/webhooks/standard/shop",
        content=body,
        headers=sign_standard(body, "msg_1", SHOP_SECRET, TS),
    ).json()["delivery_id"]
    # The Stripe payments are not registered: after the grace the first one is unmatched.
    late = NOW + app.runtime.policy.unmatched_grace + timedelta(seconds=1)
    process_delivery(stripe_ids[0], app.runtime.unit_of_work(), late, app.runtime.policy)

    def listed(**params: Any) -> list[int]:
        response = app.api("GET", "/api/deliveries", params=params)
        assert response.status_code == 200
        return [item["id"] for item in response.json()["deliveries"]]

    assert listed() == [shop, stripe_ids[1], stripe_ids[0]]
    assert listed(provider="stripe") == [stripe_ids[1], stripe_ids[0]]
    assert listed(provider="shop") == [shop]
    assert listed(status="processed") == [stripe_ids[0]]
    assert listed(status="received") == [shop, stripe_ids[1]]
    assert listed(outcome="unmatched") == [stripe_ids[0]]
    assert listed(outcome="applied") == []


def test_deliveries_are_paged_with_limit_and_before(app: Harness) -> None:
    ids = post_stripe_events(app, 5)
    newest_first = list(reversed(ids))

    pages: list[list[int]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = app.api("GET", "/api/deliveries", params=params).json()
        pages.append([item["id"] for item in page["deliveries"]])
        if page["next_before"] is None:
            break
        params = {"limit": 2, "before": page["next_before"]}

    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]


@pytest.mark.parametrize("limit", [0, -1, 1001, "many"])
def test_a_limit_outside_1_to_1000_is_unprocessable(app: Harness, limit: Any) -> None:
    assert_error(app.api("GET", "/api/deliveries", params={"limit": limit}), 422)


def test_a_limit_of_1000_is_allowed(app: Harness) -> None:
    response = app.api("GET", "/api/deliveries", params={"limit": 1000})
    assert response.status_code == 200
    assert response.json() == {"deliveries": [], "next_before": None}


def test_api_answers_503_when_the_database_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"sqlite:///{tmp_path}/no/such/dir/payhook.db"
    harness = harness_for(make_settings(tmp_path, database_url=missing), monkeypatch, migrate=False)

    for response in (
        harness.api("GET", "/api/deliveries"),
        harness.api("GET", "/api/orders/order-1"),
        harness.api("POST", "/api/orders", json={"reference": "o", "total": 1, "currency": "USD"}),
        harness.api("POST", "/api/payments/1/confirm"),
    ):
        assert_error(response, 503)
        assert "Retry-After" in response.headers


# --- health -------------------------------------------------------------------------------


def test_healthz_answers_ok(app: Harness) -> None:
    response = app.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_needs_no_token_and_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"sqlite:///{tmp_path}/no/such/dir/payhook.db"
    harness = harness_for(make_settings(tmp_path, database_url=missing), monkeypatch, migrate=False)
    assert harness.client.get("/healthz").status_code == 200


# --- readiness ----------------------------------------------------------------------------


def test_ready_means_the_database_is_reachable_even_when_the_broker_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")  # nothing listens
    harness = harness_for(settings, monkeypatch)

    response = harness.client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "database": "reachable",
        "broker": "unreachable",
    }
    metrics = harness.client.get("/metrics").text
    assert "payhook_broker_up 0.0" in metrics
    harness.runtime.engine.dispose()


def test_not_ready_when_the_database_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-folder" / "payhook.db"
    settings = make_settings(tmp_path, database_url=f"sqlite:///{missing}")
    harness = harness_for(settings, monkeypatch, migrate=False)

    response = harness.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
