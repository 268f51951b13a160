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
from tests.unit.test_receiver import Harness, assert_error, harness_for, make_settings
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
