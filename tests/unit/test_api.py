"""The API in-process: the bearer token, orders and payments, manual confirmation, deliveries."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.processing import process_delivery
from tests.unit.common import NOW
from tests.unit.webapp import (
    AUTH,
    SHOP_SECRET,
    STRIPE_EVENT,
    TOKEN,
    TS,
    Harness,
    assert_error,
    create_order,
    create_payment,
    harness_for,
    make_settings,
    standard_event,
)
from worker.signing.standard import sign_standard

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
