"""What every receiver shares: read the body, store the verified deliveries, publish, answer.

Each provider's receiver (stripe.py, standard.py, adyen.py, paypal.py) verifies and parses;
this module stores durably first and publishes after the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from domain.events import Action, MalformedEvent, PaymentEvent
from tasks.registering import Unstorable, store_deliveries
from tasks.storage.intake import Intake
from worker.metrics import DELIVERIES_RECEIVED
from worker.runtime import ProcessRuntime
from worker.signing.errors import SignatureError
from worker.web.deps import runtime_of
from worker.web.errors import HttpError, database_unavailable
from worker.web.limits import BODY_TIMEOUT_S
from worker.web.publisher import Publisher

# Only these headers are kept with a delivery: what a later check or an operator needs.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw JSON body: 415 for another content type, 413 as soon as it grows past `limit`
    bytes, 408 when it does not arrive within BODY_TIMEOUT_S (a slow sender holds no worker)."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media_type.lower() != "application/json" and not media_type.lower().endswith("+json"):
        raise HttpError(415, "webhook bodies must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(408, f"body not received within {BODY_TIMEOUT_S:g} s") from None
    return b"".join(chunks)


def refused(provider: str, error: SignatureError) -> HttpError:
    DELIVERIES_RECEIVED.labels(provider=provider, answer="401").inc()
    return HttpError(401, error.reason)


def parse_event(
    parse: Callable[[], PaymentEvent], provider: str, body: bytes, event_id: str | None = None
) -> PaymentEvent:
    """The event of a verified body, or, when it does not parse, what it is stored as.

    What was signed is kept: a new API version or field shape must not be refused (and lost) on
    every retry. The worker records it `rejected/malformed_event`, replayable once payhook
    understands it. The provider's own `event_id` is used when the signature carries it.
    """
    try:
        return parse()
    except MalformedEvent:
        return unparsed(provider, body, event_id)


def unparsed(provider: str, body: bytes, event_id: str | None = None) -> PaymentEvent:
    """A stand-in event for a signed body that does not parse: its id and type when the body
    names them plainly, else a digest of the body."""
    found_id, found_type = _envelope(body)
    return PaymentEvent(
        provider,
        event_id or found_id or f"unparsed:{hashlib.sha256(body).hexdigest()}",
        found_type or "unparsed",
        Action.UNSUPPORTED,
    )


def _envelope(body: bytes) -> tuple[str | None, str | None]:
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    found_id = _plain(document.get("id"))
    found_type = next(
        (t for key in ("type", "event_type", "eventCode") if (t := _plain(document.get(key)))),
        None,
    )
    return found_id, found_type


def _plain(value: object) -> str | None:
    """A short printable string, safe to store as an id or a type; None otherwise."""
    if isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable():
        return value
    return None


def kept_headers(request: Request, names: Sequence[str]) -> str:
    """The headers worth keeping with a delivery, as JSON."""
    return json.dumps({name: request.headers[name] for name in names if name in request.headers})


async def accept(
    request: Request,
    provider: str,
    items: list[tuple[PaymentEvent, bytes]],
    headers: str,
    *,
    answer: str,
) -> list[int]:
    """Store verified deliveries (all or none), then publish them; the caller answers 2xx.

    On PostgreSQL they are stored from the event loop (tasks/storage/intake.py), then published
    (publisher.py); on SQLite, stored and published in one trip to a request thread. A database
    failure answers 503 with Retry-After, so the provider retries. A failed publish is left to
    the sweeper: the deliveries are durable already.
    """
    rt = runtime_of(request)
    intake: Intake | None = request.app.state.intake
    stored = [(event, headers, body) for event, body in items]
    try:
        if intake is not None:
            delivery_ids = await intake.store(stored, rt.now())
        else:
            delivery_ids = await run_in_threadpool(_store_and_publish, rt, stored)
    except Unstorable as error:
        DELIVERIES_RECEIVED.labels(provider=provider, answer="400").inc()
        raise HttpError(400, f"cannot store this delivery: {error}") from None
    except SQLAlchemyError:
        DELIVERIES_RECEIVED.labels(provider=provider, answer="503").inc()
        raise database_unavailable() from None
    if intake is not None:  # after the commit; a failure is left to the sweeper, never raised
        publisher: Publisher = request.app.state.publisher
        await publisher.publish(delivery_ids)
    DELIVERIES_RECEIVED.labels(provider=provider, answer=answer).inc(len(delivery_ids))
    return delivery_ids


def _store_and_publish(
    rt: ProcessRuntime, items: list[tuple[PaymentEvent, str, bytes]]
) -> list[int]:
    delivery_ids = store_deliveries(rt.unit_of_work(), items, received_at=rt.now())
    for delivery_id in delivery_ids:
        rt.try_publish(delivery_id)  # a failed publish is left to the sweeper, never raised
    return delivery_ids


async def accept_one(request: Request, event: PaymentEvent, body: bytes) -> JSONResponse:
    """Store and publish one verified event; answer 202 with its delivery id."""
    headers = kept_headers(request, KEPT_HEADERS)
    (delivery_id,) = await accept(request, event.provider, [(event, body)], headers, answer="202")
    return JSONResponse({"delivery_id": delivery_id}, status_code=202)
