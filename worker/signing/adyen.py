"""Adyen HMAC signatures of standard notifications: one in each NotificationRequestItem."""

import re
from collections.abc import Mapping, Sequence
from typing import Any

from Adyen.util import generate_notification_sig  # type: ignore[import-untyped]

from worker.signing.errors import SignatureError
from worker.signing.text import same_signature

# The eight signed fields, in Adyen's order; amount.value and amount.currency come fifth and
# sixth. Every other field (eventDate, reason, additionalData…) is not covered by the HMAC.
_SIGNED = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")
_SIGNED_AFTER_AMOUNT = ("eventCode", "success")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def verify_adyen_item(item: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Raise SignatureError unless `item` carries a valid `additionalData.hmacSignature`.

    The signature is the base64 HMAC-SHA256 of the eight signed fields joined by ':' (a
    missing field is an empty string), keyed with the hex-decoded key. Any of `keys` passes
    (several keys during rotation). An empty `keys`, or a key that is not hex, is a
    configuration error (ValueError).
    """
    _check_keys(keys)
    received = _received_signature(item)
    if not any(same_signature(expected_signature(item, key), received) for key in keys):
        raise SignatureError("no valid signature")


def expected_signature(item: Mapping[str, Any], key: str) -> str:
    """The `hmacSignature` that `item` must carry when signed with `key` (hex)."""
    _check_keys([key])
    return _signature(_signable(item), key)


def _signature(signable: dict[str, Any], key: str) -> str:
    # The HMAC is the Adyen package's own. Its `is_valid_hmac_notification` is not used: it
    # checks one key and the first item of a batch only, returns None for an item without
    # additionalData, raises KeyError for one without hmacSignature or amount, signs a JSON
    # null as "None", and raises TypeError on a non-ASCII signature. So the fields are read
    # here (`_signable`), and the keys, the lookup and the comparison are done here too.
    # Like Adyen's libraries (and unlike its hosted-payment-page signatures), no field is
    # escaped: a ':' or '\' in merchantReference is signed as it is; the published vectors
    # in tests/fixtures/adyen/hmac verify only that way.
    signature: bytes = generate_notification_sig(signable, key)
    return signature.decode("ascii")


def _signable(item: Mapping[str, Any]) -> dict[str, Any]:
    """The signed fields as text, in the shape `generate_notification_sig` reads."""
    amount = item.get("amount")
    if amount is None:
        amount = {}
    if not isinstance(amount, Mapping):
        raise SignatureError("notification item amount is not an object")
    signable: dict[str, Any] = {name: _text(item, name) for name in _SIGNED + _SIGNED_AFTER_AMOUNT}
    signable["amount"] = {"value": _text(amount, "value"), "currency": _text(amount, "currency")}
    return signable


def _text(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # amount.value, minor units
        return str(value)
    raise SignatureError(f"notification item field {name} is neither text nor an integer")


def _received_signature(item: Mapping[str, Any]) -> str:
    additional = item.get("additionalData")
    signature = additional.get("hmacSignature") if isinstance(additional, Mapping) else None
    if not isinstance(signature, str) or not signature:
        raise SignatureError("missing additionalData.hmacSignature")
    return signature


def _check_keys(keys: Sequence[str]) -> None:
    if isinstance(keys, str):
        raise TypeError("keys must be a sequence of keys, not a single string")
    if not keys:
        raise ValueError("no Adyen HMAC key configured")
    if any(not _HEX.fullmatch(key) for key in keys):
        raise ValueError("a configured Adyen HMAC key is not hex")
