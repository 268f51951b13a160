"""The Adyen receiver: a batch stored as one delivery per item, all or none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from domain.providers import Reading, adyen, parse_delivery
from tasks.storage.tables import deliveries
from tests.unit.adyen.support import (
    OLD_KEY,
    Receiver,
    fixture_item,
    make_receiver,
    request_of,
    signed,
)
from worker.web import receiving as receiver_module


def test_a_batch_is_stored_as_one_delivery_per_item_and_accepted(receiver: Receiver) -> None:
    items = [
        signed(fixture_item("authorisation-true.json")),
        signed(fixture_item("refund-true.json")),
    ]

    response = receiver.post(request_of(*items), **{"user-agent": "Adyen HttpClient 1.0"})

    assert response.status_code == 200
    assert response.text == "[accepted]"
    assert response.headers["content-type"].startswith("text/plain")
    stored = receiver.stored()
    assert [event_id for _, event_id, _, _ in stored] == [
        "123456789:AUTHORISATION:true",
        "PSP_REFERENCE:REFUND:true",
    ]
    assert [json.loads(body) for _, _, _, body in stored] == items  # each item alone
    assert json.loads(stored[0][2]) == {
        "content-type": "application/json",
        "user-agent": "Adyen HttpClient 1.0",
    }
    assert receiver.published == [delivery_id for delivery_id, _, _, _ in stored]


def test_an_item_signed_with_the_older_key_is_accepted_during_rotation(
    receiver: Receiver,
) -> None:
    response = receiver.post(request_of(signed(fixture_item("capture-true.json"), OLD_KEY)))
    assert response.status_code == 200
    assert receiver.count() == 1


def test_one_bad_signature_refuses_the_whole_batch_and_stores_nothing(
    receiver: Receiver,
) -> None:
    good = signed(fixture_item("authorisation-true.json"))
    bad = signed(fixture_item("refund-true.json"))
    bad["amount"]["value"] += 1  # changed after signing

    response = receiver.post(request_of(good, bad))

    assert response.status_code == 401
    assert response.json() == {"error": "notificationItems[1]: no valid signature"}
    assert receiver.count() == 0
    assert receiver.published == []


def test_the_fixtures_own_signatures_are_refused(receiver: Receiver) -> None:
    response = receiver.post(request_of(fixture_item("authorisation-true.json")))
    assert response.status_code == 401
    assert receiver.count() == 0


def test_an_unsigned_item_is_refused(receiver: Receiver) -> None:
    response = receiver.post(request_of(fixture_item("chargeback.json")))  # no hmacSignature
    assert response.status_code == 401
    assert response.json() == {
        "error": "notificationItems[0]: missing additionalData.hmacSignature"
    }


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"notificationItems": []}', b'{"notificationItems": [{}]}']
)
def test_a_malformed_body_is_400(receiver: Receiver, body: bytes) -> None:
    response = receiver.post(body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed notification: ")
    assert receiver.count() == 0


def test_a_signed_item_that_does_not_parse_is_stored_with_the_rest_of_its_batch(
    receiver: Receiver,
) -> None:
    good = signed(fixture_item("authorisation-true.json"))
    no_reference = signed(fixture_item("cancellation-true.json"))

    response = receiver.post(request_of(good, no_reference))

    assert response.status_code == 200
    assert response.text == "[accepted]"  # Adyen stops retrying the batch
    (first, *_), (second, second_id, _, _) = receiver.stored()
    assert receiver.published == [first, second]
    assert second_id.endswith(":CANCELLATION:true")  # its pspReference, eventCode, success
    malformed = receiver.process(second).outcome
    assert (malformed.kind.value, malformed.reason and malformed.reason.value) == (
        "rejected",
        "malformed_event",
    )


def test_a_body_over_the_limit_is_413(receiver: Receiver) -> None:
    items = [signed(fixture_item("authorisation-true.json"))] * 100
    response = receiver.post(request_of(*items))
    assert response.status_code == 413
    assert receiver.count() == 0


def test_without_keys_the_provider_is_not_configured(tmp_path: Path) -> None:
    with make_receiver(tmp_path, "") as unconfigured:
        response = unconfigured.post(request_of(signed(fixture_item("capture-true.json"))))
        assert response.status_code == 404
        assert response.json() == {"error": "provider adyen is not configured"}


def test_a_database_outage_is_503_and_nothing_is_published(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: Any, **__: Any) -> list[int]:
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(receiver_module, "store_deliveries", unavailable)
    response = receiver.post(request_of(signed(fixture_item("capture-true.json"))))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert receiver.published == []


@pytest.mark.parametrize("fixture_name", ["receiver", "manual"])
def test_the_stored_fingerprint_is_the_one_the_worker_reads_under_its_capture_mode(
    request: pytest.FixtureRequest, fixture_name: str
) -> None:
    # What the start mark compares with the event's claim (tasks/storage/starting.py): an
    # authorisation means a confirmation under automatic capture, an authorisation under manual.
    receiver: Receiver = request.getfixturevalue(fixture_name)
    item = signed(fixture_item("authorisation-true.json"))
    assert receiver.post(request_of(item)).status_code == 200
    ((delivery_id, event_id, _, body),) = receiver.stored()
    with receiver.runtime.engine.connect() as conn:
        stored = conn.execute(
            select(deliveries.c.fingerprint).where(deliveries.c.id == delivery_id)
        ).scalar_one()

    reading = receiver.runtime.reading
    assert stored == parse_delivery("adyen", event_id, body, reading).fingerprint()
    other = next(mode for mode in adyen.CaptureMode if mode is not reading.adyen_capture)
    assert (
        stored
        != parse_delivery("adyen", event_id, body, Reading(adyen_capture=other)).fingerprint()
    )
