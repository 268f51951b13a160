"""Adyen: HMAC of notification items, their events, and POST /webhooks/adyen end to end."""

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
from sqlalchemy.exc import OperationalError

from domain.events import Action, MalformedEvent
from domain.providers import adyen, parse_delivery
from tasks.migrate import upgrade
from tasks.processing import Processed, process_delivery
from tasks.registering import create_order, create_payment
from tasks.storage import queries
from tasks.storage.tables import deliveries
from tests.fixture_files import FIXTURES, fixture_json
from tests.unit.committed import CommittedPublisher
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.adyen import sign_adyen_item, verify_adyen_item
from worker.signing.errors import SignatureError
from worker.taskqueue.app import create_app
from worker.web import receiving as receiver_module
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


# --- signatures: the published vectors --------------------------------------------------


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_every_published_vector_verifies(name: str, item: dict[str, Any], key: str) -> None:
    verify_adyen_item(item, [key])


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_signer_reproduces_every_published_signature(
    name: str, item: dict[str, Any], key: str
) -> None:
    assert sign_adyen_item(item, key) == item["additionalData"]["hmacSignature"]


@pytest.mark.parametrize("vector", [v for v in ITEM_VECTORS if "data_to_sign" in v])
def test_signed_data_is_the_published_data_to_sign(vector: dict[str, Any]) -> None:
    key = vector.get("key_hex", KEY)  # the missing-amount vector publishes no key
    assert sign_adyen_item(vector["item"], key) == hmac_b64(key, vector["data_to_sign"])


@pytest.mark.parametrize("name", SLASH_VECTOR["item_files"])
def test_colons_and_backslashes_are_signed_without_escaping(name: str) -> None:
    item = fixture_json(f"adyen/hmac/{name}")
    amount = item["amount"]
    fields = [item.get(f, "") for f in SIGNED_FIELDS[:4]]
    fields += [str(amount["value"]), amount["currency"], item["eventCode"], item["success"]]
    assert sign_adyen_item(item, SLASH_KEY) == hmac_b64(SLASH_KEY, ":".join(fields))


@pytest.mark.parametrize("field", SIGNED_FIELDS)
@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_a_vector_with_any_signed_field_altered_fails(
    name: str, item: dict[str, Any], key: str, field: str
) -> None:
    assert reason_of(altered(item, field), [key]) == "no valid signature"


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_a_vector_with_its_signature_altered_fails(
    name: str, item: dict[str, Any], key: str
) -> None:
    signature = item["additionalData"]["hmacSignature"]
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    for wrong in (flipped, "notValidSign", signature.rstrip("=")):
        forged = copy.deepcopy(item)
        forged["additionalData"]["hmacSignature"] = wrong
        assert reason_of(forged, [key]) == "no valid signature"


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_a_vector_checked_with_another_key_fails(name: str, item: dict[str, Any], key: str) -> None:
    assert reason_of(item, [OLD_KEY]) == "no valid signature"


def test_fields_outside_the_eight_are_not_signed() -> None:
    _, item, key = SIGNED[0]
    item = copy.deepcopy(item)
    item["eventDate"] = "2030-01-01T00:00:00+01:00"
    item["reason"] = "changed"
    verify_adyen_item(item, [key])


def test_a_lower_case_hex_key_is_the_same_key() -> None:
    _, item, key = SIGNED[0]
    verify_adyen_item(item, [key.lower()])


# --- signatures: rotation and refusals ----------------------------------------------------


def test_any_of_several_keys_verifies_during_rotation() -> None:
    _, item, key = SIGNED[0]
    verify_adyen_item(item, [OLD_KEY, key])
    verify_adyen_item(item, [key, OLD_KEY])


def test_after_rotation_an_item_signed_with_the_retired_key_fails() -> None:
    _, item, _ = SIGNED[0]
    item = copy.deepcopy(item)
    item["additionalData"]["hmacSignature"] = sign_adyen_item(item, OLD_KEY)
    verify_adyen_item(item, [OLD_KEY, KEY])
    assert reason_of(item, [KEY]) == "no valid signature"


@pytest.mark.parametrize(
    "additional",
    [None, {}, {"hmacSignature": ""}, {"hmacSignature": None}, "hmacSignature"],
    ids=["no additionalData", "no hmacSignature", "empty", "null", "not an object"],
)
def test_an_item_without_a_signature_is_refused(additional: Any) -> None:
    _, item, key = SIGNED[0]
    item = copy.deepcopy(item)
    if additional is None:
        del item["additionalData"]
    else:
        item["additionalData"] = additional
    assert reason_of(item, [key]) == "missing additionalData.hmacSignature"


def test_a_non_ascii_signature_is_refused_not_an_error() -> None:
    _, item, key = SIGNED[0]
    item = copy.deepcopy(item)
    item["additionalData"]["hmacSignature"] = "é" * 44
    assert reason_of(item, [key]) == "no valid signature"


@pytest.mark.parametrize(
    ("field", "value"), [("pspReference", 1.5), ("success", True), ("merchantReference", [])]
)
def test_an_item_with_fields_that_cannot_be_signed_is_refused(field: str, value: Any) -> None:
    _, item, key = SIGNED[0]
    item = copy.deepcopy(item)
    item[field] = value
    assert "neither text nor an integer" in reason_of(item, [key])


def test_an_item_whose_amount_is_not_an_object_is_refused() -> None:
    _, item, key = SIGNED[0]
    item = {**item, "amount": 1130}
    assert reason_of(item, [key]) == "notification item amount is not an object"


@pytest.mark.parametrize("keys", [[], [""], ["not hex"], ["ABC"]], ids=str)
def test_missing_or_malformed_keys_are_a_configuration_error(keys: list[str]) -> None:
    _, item, _ = SIGNED[0]
    with pytest.raises(ValueError):
        verify_adyen_item(item, keys)


def test_a_single_string_of_keys_is_a_type_error() -> None:
    _, item, key = SIGNED[0]
    with pytest.raises(TypeError):
        verify_adyen_item(item, key)


@pytest.mark.parametrize(
    ("configured", "keys"),
    [("", ()), (f" {KEY} ", (KEY,)), (f"{OLD_KEY},{KEY}", (OLD_KEY, KEY))],
)
def test_settings_read_comma_separated_keys(configured: str, keys: tuple[str, ...]) -> None:
    assert Settings(adyen_hmac_keys=SecretStr(configured)).adyen_keys() == keys


@pytest.mark.parametrize("configured", ["xyz", "ABC", f"{KEY},zz"])
def test_settings_refuse_a_key_that_is_not_hex(configured: str) -> None:
    with pytest.raises(ValueError, match="PAYHOOK_ADYEN_HMAC_KEYS") as caught:
        Settings(adyen_hmac_keys=SecretStr(configured)).adyen_keys()
    assert configured not in str(caught.value)


# --- events -------------------------------------------------------------------------------


def fixture_item(name: str) -> dict[str, Any]:
    request = fixture_json(f"adyen/notifications/{name}")
    item: dict[str, Any] = request["notificationItems"][0]["NotificationRequestItem"]
    return item


def parse(item: dict[str, Any]) -> Any:
    return adyen.parse_item(json.dumps(item).encode())


@dataclass(frozen=True)
class Expected:
    action: Action
    payment_reference: str
    amount: int
    currency: str
    refund_reference: str | None = None
    dispute_reference: str | None = None
    dispute_stage: int | None = None
    dispute_won: bool | None = None


def dispute(action: Action, stage: int, won: bool | None = None) -> Expected:
    """One of the dispute fixtures: all events of that dispute share its pspReference."""
    return Expected(action, "XXXXXXXXXX", 1000, "EUR", None, "9915555555555555", stage, won)


FIXTURE_EVENTS = {
    "authorisation-true.json": Expected(Action.CONFIRM, "8313842560770001", 10100, "EUR"),
    "capture-true.json": Expected(Action.CONFIRM, "00000001", 23623, "USD"),
    "capture-false.json": Expected(Action.CAPTURE_FAILED, "00000001", 23623, "USD"),
    "offer-closed.json": Expected(Action.CANCEL, "000000275", 27211, "EUR"),
    "refund-true.json": Expected(
        Action.REFUND, "payment-2017-1-17-11-refund", 1500, "EUR", refund_reference="PSP_REFERENCE"
    ),
    "refund-false.json": Expected(
        Action.REFUND_FAILED,
        "payment-2017-1-17-11-refund",
        1500,
        "EUR",
        refund_reference="PSP_REFERENCE",
    ),
    "notification-of-chargeback.json": dispute(Action.DISPUTE, 1),
    "chargeback.json": dispute(Action.DISPUTE_FUNDS_WITHDRAWN, 2),
    "chargeback-reversed.json": dispute(Action.DISPUTE_FUNDS_REINSTATED, 3),
    "second-chargeback.json": dispute(Action.DISPUTE_FUNDS_WITHDRAWN, 4),
    "prearbitration-won.json": dispute(Action.DISPUTE_CLOSED, 5, won=True),
    "prearbitration-lost.json": dispute(Action.DISPUTE_CLOSED, 5, won=False),
}


def test_every_notification_fixture_has_an_expectation() -> None:
    folder = FIXTURES / "adyen" / "notifications"
    without_reference = {"cancellation-true.json"}  # refused as malformed, tested below
    assert {path.name for path in folder.glob("*.json")} - without_reference == set(FIXTURE_EVENTS)


@pytest.mark.parametrize(("name", "expected"), FIXTURE_EVENTS.items(), ids=list(FIXTURE_EVENTS))
def test_every_notification_fixture_parses_to_its_action(name: str, expected: Expected) -> None:
    item = fixture_item(name)
    event = parse(item)
    assert event.provider == "adyen"
    assert event.event_type == item["eventCode"]
    assert event.event_id == f"{item['pspReference']}:{item['eventCode']}:{item['success']}"
    assert (
        event.action,
        event.payment_reference,
        event.amount,
        event.currency,
        event.refund_reference,
        event.dispute_reference,
        event.dispute_stage,
        event.dispute_won,
    ) == (
        expected.action,
        expected.payment_reference,
        expected.amount,
        expected.currency,
        expected.refund_reference,
        expected.dispute_reference,
        expected.dispute_stage,
        expected.dispute_won,
    )


@pytest.mark.parametrize(
    ("mode", "action"),
    [(adyen.CaptureMode.AUTOMATIC, Action.CONFIRM), (adyen.CaptureMode.MANUAL, Action.AUTHORIZE)],
)
def test_an_authorisation_is_the_payment_only_under_automatic_capture(
    mode: adyen.CaptureMode, action: Action
) -> None:
    raw = json.dumps(fixture_item("authorisation-true.json")).encode()
    assert adyen.parse_item(raw, mode).action is action


def test_an_item_without_merchant_reference_is_malformed() -> None:
    # The cancellation fixture names only the payment's pspReference (originalReference).
    with pytest.raises(MalformedEvent, match="merchantReference is missing"):
        parse(fixture_item("cancellation-true.json"))


def synthetic(event_code: str, success: str = "true", **changes: Any) -> dict[str, Any]:
    item = {
        "pspReference": "PSP_MOD",
        "originalReference": "PSP_PAYMENT",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "order-7",
        "amount": {"currency": "eur", "value": 500},
        "eventCode": event_code,
        "success": success,
    }
    return {**item, **changes}


@pytest.mark.parametrize(
    ("event_code", "success", "action"),
    [
        ("AUTHORISATION", "false", Action.FAIL),
        ("CAPTURE_FAILED", "true", Action.CAPTURE_FAILED),
        ("CANCELLATION", "true", Action.CANCEL),
        ("CANCELLATION", "false", Action.UNSUPPORTED),
        ("REFUND_FAILED", "true", Action.REFUND_FAILED),
        ("CANCEL_OR_REFUND", "true", Action.CANCEL_OR_REFUND),
        ("CANCEL_OR_REFUND", "false", Action.UNSUPPORTED),
        ("REQUEST_FOR_INFORMATION", "true", Action.UNSUPPORTED),
        ("REPORT_AVAILABLE", "true", Action.UNSUPPORTED),
    ],
)
def test_event_codes_without_fixture_map_to_their_action(
    event_code: str, success: str, action: Action
) -> None:
    event = parse(synthetic(event_code, success))
    assert event.action is action
    assert event.event_id == f"PSP_MOD:{event_code}:{success}"
    if action is not Action.UNSUPPORTED:
        assert (event.payment_reference, event.amount, event.currency) == ("order-7", 500, "EUR")


@pytest.mark.parametrize("event_code", ["REFUND_FAILED", "CANCEL_OR_REFUND"])
def test_refunds_are_known_by_their_own_psp_reference(event_code: str) -> None:
    assert parse(synthetic(event_code)).refund_reference == "PSP_MOD"


def test_an_unsupported_item_needs_no_merchant_reference_nor_integer_amount() -> None:
    report = next(v for v in ITEM_VECTORS if v["name"] == "java_hmac_validator_report_available")
    item = {**report["item"], "merchantReference": None, "amount": {"value": "0"}}
    assert parse(item).action is Action.UNSUPPORTED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"success": "TRUE"}, 'success must be "true" or "false"'),
        ({"success": True}, "success must be a non-empty string"),
        ({"pspReference": ""}, "pspReference must be a non-empty string"),
        ({"eventCode": None}, "eventCode must be a non-empty string"),
        ({"amount": {"currency": "EUR", "value": "500"}}, "amount.value must be"),
        ({"amount": {"currency": "EUR", "value": -1}}, "amount.value must be"),
        ({"amount": {"value": 500}}, "amount.currency must be"),
        ({"merchantReference": 7}, "merchantReference must be a non-empty string"),
    ],
)
def test_malformed_items_say_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        parse(synthetic("AUTHORISATION", **changes))


def test_a_stored_item_is_parsed_by_the_delivery_dispatch() -> None:
    body = json.dumps(fixture_item("authorisation-true.json")).encode()
    assert parse_delivery("adyen", "ignored", body) == adyen.parse_item(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"live=false&eventCode=AUTHORISATION", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"live": "false"}', "notificationItems must be a non-empty list"),
        (b'{"notificationItems": []}', "notificationItems must be a non-empty list"),
        (b'{"notificationItems": [1]}', r"notificationItems\[0\] must be an object"),
        (b'{"notificationItems": [{}]}', r"notificationItems\[0\].NotificationRequestItem"),
    ],
)
def test_malformed_notification_requests_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        adyen.notification_items(body)


# --- the receiver, and processing what it stored ------------------------------------------


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


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with make_receiver(tmp_path, f"{OLD_KEY},{KEY}", max_body_bytes=16 * 1024) as running:
        yield running


def signed(item: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    """The item re-signed with `key` (the fixtures' own signatures verify with no known key)."""
    item = copy.deepcopy(item)
    item.setdefault("additionalData", {})["hmacSignature"] = sign_adyen_item(item, key)
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


def test_authorisation_confirms_and_a_full_refund_refunds(receiver: Receiver) -> None:
    reference, amount = "8313842560770001", 10100  # the authorisation fixture's
    payment_id = receiver.register(reference, amount)
    refund = fixture_item("refund-true.json")
    refund["merchantReference"] = reference
    refund["amount"]["value"] = amount
    assert receiver.post(request_of(signed(fixture_item("authorisation-true.json")))).is_success
    assert receiver.post(request_of(signed(refund))).is_success
    (authorised_id, *_), (refund_id, *_) = receiver.stored()

    authorised = receiver.process(authorised_id).outcome
    assert (authorised.kind, authorised.transition) == ("applied", "pending->confirmed")
    assert receiver.payment(payment_id)["state"] == "confirmed"

    refunded = receiver.process(refund_id).outcome
    assert (refunded.kind, refunded.transition) == ("applied", "confirmed->refunded")
    payment = receiver.payment(payment_id)
    assert (payment["state"], payment["refunded_amount"]) == ("refunded", amount)


def chargeback_story(name: str) -> dict[str, Any]:
    item = fixture_item(name)
    return signed(item)


def test_a_chargeback_takes_the_money_and_its_reversal_returns_it(receiver: Receiver) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    payment_id = receiver.register(reference, amount)
    batch = [signed(authorisation(reference, amount, "9913333333333333"))]
    batch += [chargeback_story(f"{name}.json") for name in DISPUTE_IN_ORDER[:3]]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, notified_id, charged_id, reversed_id = [row[0] for row in receiver.stored()]
    order = f"order-{reference}"

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    assert receiver.process(notified_id).outcome.transition == "dispute:opened"
    assert receiver.order(order)["status"] == "paid"  # notified: no money moved yet
    assert receiver.process(charged_id).outcome.transition == "dispute:funds_withdrawn"
    taken = receiver.order(order)
    assert (taken["status"], taken["disputed_amount"]) == ("pending", amount)
    assert receiver.process(reversed_id).outcome.transition == "dispute:funds_reinstated"
    back = receiver.order(order)
    assert (back["status"], back["disputed_amount"]) == ("paid", 0)
    assert receiver.payment(payment_id)["state"] == "confirmed"


DISPUTE_IN_ORDER = [
    "notification-of-chargeback",
    "chargeback",
    "chargeback-reversed",
    "second-chargeback",
    "prearbitration-lost",
]


@pytest.mark.parametrize(
    ("last", "transition", "disputed"),
    [
        ("second-chargeback", "dispute:funds_withdrawn", 1000),
        ("prearbitration-won", "dispute:won", 0),
        ("prearbitration-lost", "dispute:lost", 1000),
    ],
)
def test_a_dispute_ends_with_what_its_last_stage_says_in_any_order(
    receiver: Receiver, last: str, transition: str, disputed: int
) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    receiver.register(reference, amount)
    stages = [*DISPUTE_IN_ORDER[: DISPUTE_IN_ORDER.index("second-chargeback")], last]
    if last.startswith("prearbitration"):
        stages.insert(-1, "second-chargeback")
    # The last stage first, then the others, newest to oldest: the older ones are stale.
    batch = [signed(authorisation(reference, amount, "9913333333333333"))]
    batch += [chargeback_story(f"{name}.json") for name in reversed(stages)]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, newest_id, *older_ids = [row[0] for row in receiver.stored()]

    receiver.process(authorised_id)
    assert receiver.process(newest_id).outcome.transition == transition
    assert {receiver.process(i).outcome.reason for i in older_ids} == {"stale"}
    assert receiver.order(f"order-{reference}")["disputed_amount"] == disputed


def test_a_chargeback_before_the_payment_is_captured_waits_for_the_capture(
    receiver: Receiver,
) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    payment_id = receiver.register(reference, amount)
    batch = [signed(chargeback), signed(authorisation(reference, amount, "9913333333333333"))]
    assert receiver.post(request_of(*batch)).is_success
    charged_id, authorised_id = [row[0] for row in receiver.stored()]

    waiting = receiver.process(charged_id)
    assert (waiting.outcome.kind, waiting.outcome.reason) == ("deferred", "awaiting_state")
    captured = receiver.process(authorised_id)
    assert captured.woken == (charged_id,)
    assert receiver.process(charged_id).outcome.transition == "dispute:funds_withdrawn"
    assert receiver.payment(payment_id)["disputed_amount"] == amount


def test_the_same_item_delivered_twice_is_a_same_event_duplicate(receiver: Receiver) -> None:
    payment_id = receiver.register("8313842560770001", 10100)
    item = signed(fixture_item("authorisation-true.json"))
    assert receiver.post(request_of(item)).is_success
    assert receiver.post(request_of(item)).is_success  # Adyen retried: no [accepted] seen
    (first_id, *_), (second_id, *_) = receiver.stored()

    first = receiver.process(first_id).outcome
    second = receiver.process(second_id).outcome

    assert first.kind == "applied"
    assert (second.kind, second.reason, second.duplicate_of) == (
        "acknowledged_duplicate",
        "same_event",
        first_id,
    )
    assert receiver.payment(payment_id)["confirmed_by"] == first_id


def test_a_refund_failure_before_its_success_keeps_the_success_from_applying(
    receiver: Receiver,
) -> None:
    reference, amount = "payment-2017-1-17-11-refund", 1500  # the refund fixtures'
    payment_id = receiver.register(reference, amount)
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP"))]
    batch += [signed(fixture_item("refund-false.json")), signed(fixture_item("refund-true.json"))]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, failed_id, succeeded_id = [row[0] for row in receiver.stored()]

    receiver.process(authorised_id)
    failed = receiver.process(failed_id).outcome
    late = receiver.process(succeeded_id).outcome

    assert (failed.kind, failed.transition) == ("applied", "refund:failed")
    assert (late.kind, late.reason) == ("ignored", "stale")
    payment = receiver.payment(payment_id)
    assert (payment["state"], payment["refunded_amount"]) == ("confirmed", 0)


def test_a_capture_after_the_authorisation_is_already_in_state(receiver: Receiver) -> None:
    capture = fixture_item("capture-true.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = receiver.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert receiver.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = receiver.stored()

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    captured = receiver.process(capture_id).outcome

    assert (captured.kind, captured.reason) == ("acknowledged_duplicate", "already_in_state")
    assert receiver.payment(payment_id)["state"] == "confirmed"


def test_a_failed_capture_takes_back_what_automatic_capture_counted(receiver: Receiver) -> None:
    capture = fixture_item("capture-false.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = receiver.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert receiver.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = receiver.stored()

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    failed = receiver.process(capture_id).outcome

    assert (failed.kind, failed.transition) == ("applied", "confirmed->failed")
    assert receiver.payment(payment_id)["state"] == "failed"
    assert receiver.order(f"order-{reference}")["paid_amount"] == 0


def test_a_failed_capture_before_its_authorisation_waits_for_it(receiver: Receiver) -> None:
    capture = fixture_item("capture-false.json")
    payment_id = receiver.register(capture["merchantReference"], 23623, currency="USD")
    assert receiver.post(request_of(signed(capture))).is_success
    ((capture_id, *_),) = receiver.stored()

    waiting = receiver.process(capture_id).outcome

    assert (waiting.kind, waiting.reason) == ("deferred", "awaiting_state")
    assert receiver.payment(payment_id)["state"] == "pending"


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Receiver]:
    with make_receiver(tmp_path, KEY, adyen_capture="manual") as running:
        yield running


def test_under_manual_capture_the_authorisation_holds_and_the_capture_pays(
    manual: Receiver,
) -> None:
    capture = fixture_item("capture-true.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = manual.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert manual.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = manual.stored()

    assert manual.process(authorised_id).outcome.transition == "pending->authorized"
    held = manual.order(f"order-{reference}")
    assert (held["status"], held["paid_amount"]) == ("pending", 0)
    assert manual.process(capture_id).outcome.transition == "authorized->confirmed"
    assert manual.order(f"order-{reference}")["status"] == "paid"
    assert manual.payment(payment_id)["state"] == "confirmed"


@pytest.mark.parametrize(
    ("fixture", "transition"),
    [
        ("offer-closed.json", "authorized->canceled"),
        ("capture-false.json", "authorized->failed"),
    ],
)
def test_under_manual_capture_an_authorisation_that_is_never_captured_pays_nothing(
    manual: Receiver, fixture: str, transition: str
) -> None:
    ended = fixture_item(fixture)
    reference, amount = ended["merchantReference"], ended["amount"]["value"]
    currency = ended["amount"]["currency"]
    manual.register(reference, amount, currency=currency)
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency=currency))]
    batch.append(signed(ended))
    assert manual.post(request_of(*batch)).is_success
    (authorised_id, *_), (ended_id, *_) = manual.stored()

    manual.process(authorised_id)
    assert manual.process(ended_id).outcome.transition == transition
    assert manual.order(f"order-{reference}")["paid_amount"] == 0


def test_a_cancellation_cancels_a_pending_payment(receiver: Receiver) -> None:
    # The fixture carries no merchantReference (recorded malformed, tested above);
    # Adyen sends one for payments made with one, as here.
    cancellation = fixture_item("cancellation-true.json")
    cancellation["merchantReference"] = "order-cancelled"
    payment_id = receiver.register("order-cancelled", 500)
    assert receiver.post(request_of(signed(cancellation))).is_success
    ((cancellation_id, *_),) = receiver.stored()

    canceled = receiver.process(cancellation_id).outcome

    assert (canceled.kind, canceled.transition) == ("applied", "pending->canceled")
    assert receiver.payment(payment_id)["state"] == "canceled"
