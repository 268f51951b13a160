"""The Stripe receiver in-process: verified, stored, published, answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.processing import process_delivery
from tests.unit.common import NOW
from tests.unit.webapp import (
    MAX_BODY,
    ROTATED_SECRET,
    STRIPE_EVENT,
    STRIPE_SECRET,
    TS,
    Harness,
    assert_error,
    harness_for,
    make_settings,
)
from worker.signing.stripe import sign_stripe

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
