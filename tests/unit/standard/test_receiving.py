"""The Standard Webhooks receiver in-process: one secret set per source."""

from __future__ import annotations

import json

from tests.unit.webapp import (
    SHOP_SECRET,
    STRIPE_EVENT,
    STRIPE_SECRET,
    TS,
    Harness,
    assert_error,
    standard_event,
)
from worker.signing.standard import sign_standard

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
