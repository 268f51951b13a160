"""What every verifier needs: the body as the text that was signed, and a safe comparison."""

from __future__ import annotations

import hmac

from worker.signing.errors import SignatureError


def signed_text(body: bytes) -> str:
    """The body as text for a signer that takes text.

    Strict UTF-8 decoding round-trips exactly, so the MAC still covers the bytes as received;
    a body that is not UTF-8 cannot have been signed by the provider.
    """
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not valid UTF-8") from None


def same_signature(expected: str, received: str) -> bool:
    """Constant-time comparison of the signature text as sent (hex or base64)."""
    # compare_digest refuses non-ASCII str; such a value cannot match a digest anyway.
    return received.isascii() and hmac.compare_digest(expected, received)
