"""POST /webhooks/adyen: a batch of notification items, each its own delivery.

Adyen retries the whole request until it is answered `[accepted]`, so the batch is taken or
refused as one: every item must verify, then all are stored in one transaction (an item that
does not parse too, recorded rejected/malformed_event).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse

from domain.events import MalformedEvent, PaymentEvent
from domain.providers import adyen
from domain.providers.adyen import CaptureMode
from worker.metrics import DELIVERIES_RECEIVED
from worker.signing.adyen import verify_adyen_item
from worker.signing.errors import SignatureError
from worker.web.deps import Runtime
from worker.web.errors import HttpError
from worker.web.receiving import accept, kept_headers, parse_event, read_body

ACCEPTED = "[accepted]"
# Kept with each delivery; never Authorization (Adyen may send basic-auth credentials).
KEPT_HEADERS = ("content-type", "user-agent")

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/adyen", response_class=PlainTextResponse)
async def adyen_webhook(request: Request, rt: Runtime) -> PlainTextResponse:
    keys = rt.settings.adyen_keys()
    if not keys:
        raise HttpError(404, "provider adyen is not configured")
    body = await read_body(request, rt.settings.max_body_bytes)
    try:
        items = adyen.notification_items(body)
    except MalformedEvent as error:
        raise _refused(400, f"malformed notification: {error}") from None
    for index, item in enumerate(items):
        try:
            verify_adyen_item(item, keys)
        except SignatureError as error:
            raise _refused(401, f"notificationItems[{index}]: {error.reason}") from None
    # Parsed as the worker parses it (its reading of captures), for the stored fingerprint.
    capture = rt.reading.adyen_capture
    deliveries = [_delivery(item, capture) for item in items]
    headers = kept_headers(request, KEPT_HEADERS)
    # Counted per delivery (item) here; a refused request counts once, as it stores none.
    await accept(
        request,
        adyen.PROVIDER,
        [(event, item_body) for event, item_body in deliveries],
        headers,
        answer="200",
    )
    return PlainTextResponse(ACCEPTED)


def _delivery(item: dict[str, Any], capture: CaptureMode) -> tuple[PaymentEvent, bytes]:
    """The event and the stored body of one item: the item alone, so the worker parses one.
    A signed item that does not parse is stored all the same (rejected/malformed_event), so
    that one new item shape never refuses its whole batch on every retry."""
    item_body = json.dumps(item).encode()
    try:
        known_id: str | None = adyen.event_id(item)
    except MalformedEvent:
        known_id = None
    event = parse_event(
        lambda: adyen.parse_item(item_body, capture), adyen.PROVIDER, item_body, known_id
    )
    return event, item_body


def _refused(status: int, reason: str) -> HttpError:
    DELIVERIES_RECEIVED.labels(provider=adyen.PROVIDER, answer=str(status)).inc()
    return HttpError(status, reason)
