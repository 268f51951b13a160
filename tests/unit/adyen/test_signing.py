"""Adyen HMAC signatures: the published vectors, rotation and refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fixture_files import fixture_json
from tests.unit.adyen.support import (
    ITEM_VECTORS,
    KEY,
    OLD_KEY,
    SIGNED,
    SIGNED_FIELDS,
    SIGNED_IDS,
    SLASH_KEY,
    SLASH_VECTOR,
    altered,
    hmac_b64,
    reason_of,
)
from worker.settings import Settings
from worker.signing.adyen import expected_signature, verify_adyen_item

# --- signatures: the published vectors --------------------------------------------------


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_every_published_vector_verifies(name: str, item: dict[str, Any], key: str) -> None:
    verify_adyen_item(item, [key])


@pytest.mark.parametrize(("name", "item", "key"), SIGNED, ids=SIGNED_IDS)
def test_signer_reproduces_every_published_signature(
    name: str, item: dict[str, Any], key: str
) -> None:
    assert expected_signature(item, key) == item["additionalData"]["hmacSignature"]


@pytest.mark.parametrize("vector", [v for v in ITEM_VECTORS if "data_to_sign" in v])
def test_signed_data_is_the_published_data_to_sign(vector: dict[str, Any]) -> None:
    key = vector.get("key_hex", KEY)  # the missing-amount vector publishes no key
    assert expected_signature(vector["item"], key) == hmac_b64(key, vector["data_to_sign"])


@pytest.mark.parametrize("name", SLASH_VECTOR["item_files"])
def test_colons_and_backslashes_are_signed_without_escaping(name: str) -> None:
    item = fixture_json(f"adyen/hmac/{name}")
    amount = item["amount"]
    fields = [item.get(f, "") for f in SIGNED_FIELDS[:4]]
    fields += [str(amount["value"]), amount["currency"], item["eventCode"], item["success"]]
    assert expected_signature(item, SLASH_KEY) == hmac_b64(SLASH_KEY, ":".join(fields))


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
    item["additionalData"]["hmacSignature"] = expected_signature(item, OLD_KEY)
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
