"""Every request's body bounded in size and in time; /api shut to a wrong token before it.

The webhook receivers read their own bodies (receiving.read_body, bounded by
PAYHOOK_MAX_BODY_BYTES); every other route's body is read here, at most API_BODY_LIMIT bytes
within BODY_TIMEOUT_S, and handed on whole. An /api request without the right bearer token is
answered 401 before a byte of its body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.web.errors import HttpError

API_BODY_LIMIT = 64 * 1024
BODY_TIMEOUT_S = 10.0
WEBHOOKS = "/webhooks/"


class BoundedBodies:
    def __init__(self, app: ASGIApp, refuse_token: Callable[[str | None], str | None]) -> None:
        self.app = app
        self.refuse_token = refuse_token  # why an Authorization header does not open /api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(WEBHOOKS):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        try:
            if path == "/api" or path.startswith("/api/"):
                refusal = self.refuse_token(headers.get("authorization"))
                if refusal is not None:
                    raise HttpError(401, refusal)
            body = await read_bounded(receive, headers, API_BODY_LIMIT)
        except HttpError as error:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def read_bounded(receive: Receive, headers: Headers, limit: int) -> bytes:
    """The whole body: 413 past `limit` bytes (declared or sent), 408 after BODY_TIMEOUT_S."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break  # the client went away
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"body larger than {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise HttpError(408, f"body not received within {BODY_TIMEOUT_S:g} s") from None
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the body read already, then whatever the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
