"""GET /api/events: the pull feed of host notifications, behind the bearer token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.webapp import (
    Harness,
    assert_error,
    create_order,
    create_payment,
    harness_for,
    make_settings,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_manual_confirmation_is_listed_in_the_feed_in_id_order(app: Harness) -> None:
    create_order(app)
    payment_id = create_payment(app).json()["id"]
    assert app.api("POST", f"/api/payments/{payment_id}/confirm").status_code == 200
    assert app.api("POST", f"/api/payments/{payment_id}/confirm").status_code == 409

    events = app.api("GET", "/api/events").json()
    assert [event["type"] for event in events] == ["payment.confirmed", "order.paid"]
    assert events[0]["id"] < events[1]["id"]
    assert set(events[0]) == {"id", "type", "timestamp", "data"}
    assert events[0]["data"] == {
        "order_reference": "order-1",
        "order_sequence": 1,
        "payment_id": payment_id,
        "provider": "stripe",
        "provider_reference": "pi_000000000000000000000000",
        "state": "confirmed",
        "amount": 2000,
        "refunded_amount": 0,
        "currency": "USD",
        "transition": "pending->confirmed",
        "delivery_id": None,
    }
    after_first = app.api("GET", f"/api/events?after={events[0]['id']}").json()
    assert [event["id"] for event in after_first] == [events[1]["id"]]
    assert app.api("GET", "/api/events?limit=1").json() == events[:1]


def test_the_feed_needs_the_token_and_refuses_pages_over_a_thousand(app: Harness) -> None:
    assert_error(app.client.get("/api/events"), 401)
    assert app.api("GET", "/api/events?limit=1001").status_code == 422
    assert app.api("GET", "/api/events?after=-1").status_code == 422
    assert app.api("GET", "/api/events?limit=1000").json() == []


def test_a_manual_confirmation_asks_for_one_relay_run_when_there_are_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, notify_url="http://127.0.0.1:9/hook", notify_secret=SECRET)
    harness = harness_for(settings, monkeypatch)
    sent: list[str] = []
    monkeypatch.setattr(harness.runtime.app, "send_task", lambda name, **_: sent.append(name))
    create_order(harness)
    payment_id = create_payment(harness).json()["id"]
    harness.api("POST", f"/api/payments/{payment_id}/confirm")
    harness.api("POST", f"/api/payments/{payment_id}/confirm")
    assert sent == ["payhook.relay_notifications"]
    harness.runtime.engine.dispose()
