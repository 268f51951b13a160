"""Post one host notification: a Standard Webhooks message, signed, with short timeouts."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property

import httpx
from standardwebhooks.webhooks import Webhook

from tasks.relaying import Answer

# Short and bounded: a slow endpoint holds one relay thread for at most a few seconds.
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
USER_AGENT = "payhook-notify/1"


class NotificationSender:
    """Signs with the first secret (the others are the host's to accept during rotation)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    @cached_property
    def _client(self) -> httpx.Client:
        # Built on first use, in the process that posts (never before a fork).
        return httpx.Client(
            timeout=TIMEOUT,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )

    def post(self, url: str, message_id: str, body: bytes, now: datetime) -> Answer:
        signature = self._webhook.sign(message_id, now, body)
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            answer = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return Answer(None, f"{type(error).__name__}: {error}"[:255])
        return Answer(answer.status_code)
