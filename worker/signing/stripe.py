"""Stripe webhook signatures: the `Stripe-Signature` header, scheme v1."""

from collections.abc import Sequence

import stripe

from worker.signing.errors import SignatureError
from worker.signing.text import same_signature, signed_text

_SCHEME = "v1"


def verify_stripe(
    body: bytes, header: str | None, secrets: Sequence[str], now: int, tolerance: int = 300
) -> None:
    """Raise SignatureError unless `header` carries a fresh v1 signature of `body`.

    `header` is `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=…]`. Any v1 signature made with
    any of `secrets` passes (several secrets during rotation); other schemes are ignored.
    The timestamp must be within `tolerance` seconds of `now`, in the past or the future.
    An empty `secrets` or an empty secret is a configuration error (ValueError).
    """
    _check_secrets(secrets)
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance")
    payload = signed_text(body)
    expected = [_v1_signature(payload, secret, timestamp) for secret in secrets]
    if not any(same_signature(want, got) for want in expected for got in signatures):
        raise SignatureError("no valid signature")


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """Return the `Stripe-Signature` value Stripe would send for `body` at `timestamp`.

    `body` must be UTF-8 (as every Stripe event is); other bytes raise UnicodeDecodeError.
    """
    return _signature_header(body.decode("utf-8"), secret, timestamp)


def _signature_header(payload: str, secret: str, timestamp: int) -> str:
    # The HMAC is the stripe package's own, through its public signer, which returns
    # "t=<timestamp>,v1=<hex>". Its `verify_header(..., tolerance=None)` would also work
    # (tolerance=None skips the clock check in stripe 16.1), but it parses the header
    # loosely (int() takes "1_533_204_620"; "v1=<sig>=junk" is cut at the second "="),
    # raises TypeError on a non-ASCII signature and UnicodeDecodeError on a non-UTF-8
    # body, and is called once per secret with an exception for each miss. So parsing, the
    # window and the constant-time comparison are done here.
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp
    )
    return header


def _v1_signature(payload: str, secret: str, timestamp: int) -> str:
    return _signature_header(payload, secret, timestamp).rpartition(f",{_SCHEME}=")[2]


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        scheme, _, value = item.partition("=")
        if not scheme or not value:
            raise SignatureError("malformed Stripe-Signature header")
        if scheme == "t":
            timestamps.append(value)
        elif scheme == _SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not _is_unix_seconds(timestamps[0]):
        raise SignatureError("malformed Stripe-Signature header")
    if not signatures:
        raise SignatureError("no v1 signature in Stripe-Signature header")
    return int(timestamps[0]), signatures


def _is_unix_seconds(value: str) -> bool:
    # ASCII digits only, and few enough that int() cannot hit its digit limit.
    return value.isascii() and value.isdigit() and len(value) <= 18


def _check_secrets(secrets: Sequence[str]) -> None:
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("no Stripe webhook secret configured")
    if any(not secret.strip() for secret in secrets):
        raise ValueError("a configured Stripe webhook secret is empty")
