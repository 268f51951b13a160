"""The one error a webhook signature check raises for a request that does not verify."""


class SignatureError(Exception):
    """A webhook request failed signature verification.

    `reason` is one short, human-readable line that is safe to log and to return to the
    sender: it never contains a secret, a signature or the body.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
