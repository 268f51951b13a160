"""Hostile input: wrong content types, slow bodies, and parsers fed anything at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from domain.events import MalformedEvent
from domain.providers import adyen, paypal, standard, stripe
from tests.unit.webapp import (
    STRIPE_EVENT,
    TOKEN,
    Harness,
    assert_error,
    harness_for,
    make_settings,
)
from worker.web import limits
from worker.web import receiving as receiver


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = harness_for(make_settings(tmp_path), monkeypatch)
    yield harness
    harness.runtime.engine.dispose()


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_is_refused_with_415_and_nothing_stored(
    app: Harness, content_type: str
) -> None:
    response = app.stripe(**{"Content-Type": content_type})

    assert "application/json" in assert_error(response, 415)
    assert app.deliveries() == 0


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/cloudevents+json"]
)
def test_json_content_types_with_parameters_or_suffixes_are_accepted(
    app: Harness, content_type: str
) -> None:
    assert app.stripe(**{"Content-Type": content_type}).status_code == 202


def test_a_body_that_does_not_arrive_in_time_is_refused_with_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receiver, "BODY_TIMEOUT_S", 0.05)
    sent: list[dict[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(1)  # a sender that never finishes its body
        return {"type": "http.request", "body": b"{", "more_body": True}

    async def call() -> None:
        request = Request({"type": "http", "method": "POST", "headers": []}, trickle)
        try:
            await receiver.read_body(request, 1024)
        except receiver.HttpError as error:
            sent.append({"status": error.status, "reason": error.reason})

    asyncio.run(call())
    assert sent and sent[0]["status"] == 408


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_bodies = st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=300, deadline=None)
@given(body=_bodies)
def test_every_parser_refuses_any_body_with_malformed_event_or_parses_it(body: bytes) -> None:
    parsers = [
        stripe.parse,
        paypal.parse,
        adyen.parse_item,
        lambda b: standard.parse("shop", "msg_1", b),
        adyen.notification_items,
    ]
    for parse in parsers:
        with contextlib.suppress(MalformedEvent):
            parse(body)


@settings(max_examples=200, deadline=None)
@given(
    event_type=st.sampled_from(
        [
            "payment_intent.succeeded",
            "charge.succeeded",
            "charge.refunded",
            "charge.dispute.closed",
            "checkout.session.completed",
            "charge.refund.updated",
        ]
    ),
    obj=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "amount",
                "amount_received",
                "amount_total",
                "currency",
                "payment_intent",
                "charge",
                "status",
                "refunds",
                "payment_status",
                "latest_charge",
                "charges",
            ]
        ),
        _json,
    ),
)
def test_stripe_shaped_bodies_with_any_field_values_never_crash_the_parser(
    event_type: str, obj: dict[str, Any]
) -> None:
    body = json.dumps({"id": "evt_x", "type": event_type, "data": {"object": obj}}).encode()
    with contextlib.suppress(MalformedEvent):
        stripe.parse(body)


# --- the API: the token before the body, and a bounded body ------------------------------


def _call(app: Harness, path: str, receive: Any, **headers: str) -> tuple[int, bytes]:
    """Call the ASGI app directly with this `receive`; (status, body) of its answer."""
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *raw],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    answer: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    asyncio.run(app.client.app(scope, receive, send))  # type: ignore[arg-type]
    return answer["status"], answer["body"]


def test_an_api_request_without_the_token_is_refused_before_its_body_is_read(
    app: Harness,
) -> None:
    chunks_read = 0

    async def endless() -> dict[str, Any]:  # a huge upload (16 MiB here, so a failure is cheap)
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": chunks_read < 256}

    status, body = _call(app, "/api/orders", endless, Authorization="Bearer wrong")

    assert status == 401
    assert json.loads(body) == {"error": "missing or wrong bearer token"}
    assert chunks_read == 0


def test_an_api_body_past_64_kib_is_refused_with_413_and_nothing_stored(app: Harness) -> None:
    padding = "x" * (64 * 1024)
    order = {"reference": "order-big", "total": 100, "currency": "usd", "note": padding}

    declared = app.api("POST", "/api/orders", json=order)
    chunked = app.api("POST", "/api/orders", content=iter([json.dumps(order).encode()]))

    assert "64" in assert_error(declared, 413) or "65536" in declared.text
    assert_error(chunked, 413)
    assert app.api("GET", "/api/orders/order-big").status_code == 404
    small = {"reference": "order-small", "total": 100, "currency": "usd"}
    assert app.api("POST", "/api/orders", json=small).status_code == 201


def test_an_api_body_that_does_not_arrive_in_time_is_refused_with_408(
    app: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.05)
    chunks = 0

    async def trickle() -> dict[str, Any]:  # a byte a second, three of them
        nonlocal chunks
        chunks += 1
        await asyncio.sleep(1)
        return {"type": "http.request", "body": b"{", "more_body": chunks < 3}

    status, body = _call(app, "/api/orders", trickle, Authorization=f"Bearer {TOKEN}")

    assert status == 408
    assert "not received" in json.loads(body)["error"]


# --- what the database would refuse is a 400 with the reason, not a 503 -------------------


def _stripe_event(**changes: Any) -> bytes:
    event = json.loads(STRIPE_EVENT)
    event.update(changes)
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("event_id", "reason"),
    [
        ("evt_" + "x" * 296, "event_id is longer than 255 characters"),
        ("evt_\u0000nul", "event_id contains a NUL character"),
    ],
)
def test_a_signed_event_the_database_cannot_hold_is_a_400_with_the_reason(
    app: Harness, event_id: str, reason: str
) -> None:
    response = app.stripe(_stripe_event(id=event_id))

    assert reason in assert_error(response, 400)
    assert app.deliveries() == 0
    assert app.published == []


def test_a_reference_with_a_nul_character_is_refused_before_it_is_stored(app: Harness) -> None:
    event = json.loads(STRIPE_EVENT)
    event["data"]["object"]["id"] = "pi_\u0000"

    response = app.stripe(json.dumps(event).encode())

    assert "payment_reference contains a NUL character" in assert_error(response, 400)
    assert app.deliveries() == 0
