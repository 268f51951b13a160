"""The reference receiver: POST /webhooks/stripe as a raw ASGI app under uvicorn's defaults.

Verify the Stripe-Signature (HMAC-SHA256, 300 s tolerance), read the event's id and type, INSERT
the body and commit on a pooled connection, publish the task, answer 202. Configured from
REFERENCE_DATABASE_URL, REFERENCE_BROKER_URL, REFERENCE_STRIPE_SECRET and REFERENCE_POOL_SIZE;
run as `uvicorn --factory worker.tooling.bench.reference.receiver:create_app --port PORT`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import psycopg

from worker.tooling.bench.reference.tasks import celery_app

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOLERANCE_S = 300
INSERT = (
    "INSERT INTO ref_deliveries (event_id, event_type, headers, body) "
    "VALUES (%s, %s, %s, %s) RETURNING id"
)


class Pool:
    """A fixed set of connections opened at startup, handed out one request at a time."""

    def __init__(self, url: str, size: int) -> None:
        self._url, self._size = url, size
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self._size):
            self._free.put_nowait(await psycopg.AsyncConnection.connect(self._url))

    async def insert(self, *values: Any) -> int:
        conn = await self._free.get()
        try:
            async with conn.transaction():
                cursor = await conn.execute(INSERT, values)
                row = await cursor.fetchone()
        finally:
            self._free.put_nowait(conn)
        assert row is not None
        return int(row[0])

    async def close(self) -> None:
        while not self._free.empty():
            await self._free.get_nowait().close()


class Receiver:
    def __init__(self) -> None:
        self.secret = os.environ["REFERENCE_STRIPE_SECRET"].encode()
        self.pool = Pool(
            os.environ["REFERENCE_DATABASE_URL"], int(os.environ.get("REFERENCE_POOL_SIZE", "8"))
        )
        self.task = celery_app().tasks["reference.confirm"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.pool.open()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await answer(send, 200, b'{"status": "ok"}')
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        signature = headers.get(b"stripe-signature", b"").decode()
        if not self.verified(body, signature):
            await answer(send, 401, b'{"error": "bad signature"}')
            return
        try:
            event = json.loads(body)
            event_id, event_type = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError):
            await answer(send, 400, b'{"error": "malformed event"}')
            return
        kept = json.dumps({"stripe-signature": signature})
        delivery_id = await self.pool.insert(event_id, event_type, kept, body)
        self.task.apply_async((delivery_id,))
        await answer(send, 202, b'{"delivery_id": %d}' % delivery_id)

    def verified(self, body: bytes, header: str) -> bool:
        parts = [part.partition("=") for part in header.split(",")]
        stamps = [value for key, _, value in parts if key == "t"]
        if not stamps or not stamps[0].isdigit():
            return False
        if abs(time.time() - int(stamps[0])) > TOLERANCE_S:
            return False
        signed = stamps[0].encode() + b"." + body
        expected = hmac.new(self.secret, signed, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected, value) for key, _, value in parts if key == "v1")


async def answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> Receiver:
    """Built in each server process, after uvicorn started it: nothing is built at import."""
    return Receiver()
