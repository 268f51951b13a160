"""Standard Webhooks signatures (https://www.standardwebhooks.com), symmetric scheme v1."""

import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from worker.signing.errors import SignatureError
from worker.signing.text import same_signature, signed_text

_SCHEME = "v1"
_KEY_PREFIX = "whsec_"
# Standard base64 alphabet, padding optional: b64decode would silently drop anything else
# and leave a different key than the one configured.
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: int,
    tolerance: int = 300,
) -> str:
    """Return the webhook-id if `headers` carry a fresh v1 signature of `body`.

    `headers` is looked up with the lower-case names `webhook-id`, `webhook-timestamp` and
    `webhook-signature`: pass a case-insensitive mapping (such as Starlette's `Headers`)
    or one with lower-case keys. `webhook-signature` is a space-separated list of
    `<version>,<base64>`; any v1 entry made with any of `secrets` passes, other versions
    are ignored. The timestamp must be within `tolerance` seconds of `now`, in the past or
    the future. Raises SignatureError; an empty or non-base64 secret, or no secrets at all,
    is a configuration error (ValueError).
    """
    signers = _signers(secrets)
    msg_id = _webhook_id(headers)
    timestamp = _timestamp(headers, now, tolerance)
    signatures = _v1_signatures(_header(headers, "webhook-signature"))
    payload = signed_text(body)
    expected = [_v1_signature(signer, msg_id, timestamp, payload) for signer in signers]
    if not any(same_signature(want, got) for want in expected for got in signatures):
        raise SignatureError("no valid signature")
    return msg_id


def sign_standard(body: bytes, msg_id: str, secret: str, timestamp: int) -> dict[str, str]:
    """Return the three headers a Standard Webhooks sender would send for `body`.

    `body` must be UTF-8; other bytes raise UnicodeDecodeError.
    """
    (signer,) = _signers([secret])
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": (
            f"{_SCHEME},{_v1_signature(signer, msg_id, timestamp, body.decode('utf-8'))}"
        ),
    }


def _v1_signature(signer: Webhook, msg_id: str, timestamp: int, payload: str) -> str:
    # The HMAC is the standardwebhooks library's own; it returns "v1,<base64>". Its
    # `verify` is not used: it reads the real clock, accepts float timestamps ("1.6e9"),
    # and raises ValueError/binascii.Error on entries without exactly one comma or with
    # bad base64, and UnicodeDecodeError on a non-UTF-8 body.
    signature: str = signer.sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), payload)
    return signature.partition(",")[2]


def _signers(secrets: Sequence[str]) -> list[Webhook]:
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("no Standard Webhooks secret configured")
    return [_signer(secret) for secret in secrets]


def _signer(secret: str) -> Webhook:
    key = secret.removeprefix(_KEY_PREFIX)
    if not key:
        raise ValueError("a configured Standard Webhooks secret is empty")
    if not _BASE64.fullmatch(key):
        raise ValueError(
            "a configured Standard Webhooks secret is not base64 (after an optional whsec_ prefix)"
        )
    try:
        return Webhook(key)
    except (binascii.Error, EmptyWebhookSecretError) as err:
        raise ValueError(
            "a configured Standard Webhooks secret is not valid base64 or decodes to nothing"
        ) from err


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def _webhook_id(headers: Mapping[str, str]) -> str:
    msg_id = _header(headers, "webhook-id")
    # It is signed as UTF-8; a str that cannot be encoded (lone surrogates) cannot match.
    try:
        msg_id.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError("malformed webhook-id header") from None
    return msg_id


def _timestamp(headers: Mapping[str, str], now: int, tolerance: int) -> int:
    value = _header(headers, "webhook-timestamp")
    # ASCII digits only, and few enough that int() cannot hit its digit limit.
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise SignatureError("malformed webhook-timestamp header")
    timestamp = int(value)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance")
    return timestamp


def _v1_signatures(header: str) -> list[str]:
    signatures = [
        signature
        for version, _, signature in (entry.partition(",") for entry in header.split(" "))
        if version == _SCHEME and signature
    ]
    if not signatures:
        raise SignatureError("no v1 signature in webhook-signature header")
    return signatures
