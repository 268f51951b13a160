"""The bare insert endpoint of `payhook bench`: the receiver's ceiling.

A raw ASGI app that does only what the receiver cannot avoid: read the body, INSERT it as a
delivery through the same repository and engine settings, commit, answer 202. No routing, no
signature check, no parsing, no publish. Run under uvicorn with the receiver's own options:
`python -m worker.tooling.bench.bare --port PORT`, with the receiver's PAYHOOK_* environment.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine

from tasks.storage.engine import make_engine
from tasks.storage.uow import UnitOfWork
from worker.logs import configure_logging
from worker.settings import Settings, SettingsError, load_settings
from worker.web.server import run_http

# Rows this endpoint stores carry this provider; the benchmark deletes them afterwards, since
# nothing will ever give them an outcome.
BARE_PROVIDER = "bench-bare"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BareInsert:
    """Any POST: store the body as a delivery, answer 202 `{"delivery_id": …}`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None
        self._serial = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Built per process, after uvicorn started: nothing is built at import.
                self._engine = make_engine(
                    self._settings.database, pool_size=self._settings.db_pool_size
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._engine is not None:
                    self._engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":  # a probe, or the load generator opening connections
            await _answer(send, 200, b'{"status": "ok"}')
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in (b"content-type", b"stripe-signature")
        }
        delivery_id = await anyio.to_thread.run_sync(
            self._store, b"".join(chunks), json.dumps(headers)
        )
        await _answer(send, 202, json.dumps({"delivery_id": delivery_id}).encode())

    def _store(self, body: bytes, headers: str) -> int:
        if self._engine is None:
            raise RuntimeError("the lifespan has not started")
        with UnitOfWork(self._engine) as uow:
            delivery_id = uow.deliveries.add(
                provider=BARE_PROVIDER,
                event_id=f"bare-{next(self._serial)}",
                event_type="bare",
                received_at=datetime.now(UTC),
                headers=headers,
                body=body,
            )
            uow.commit()
        return delivery_id


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.tooling.bench.bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"payhook: {error}", file=sys.stderr)
        return 2
    configure_logging(json=settings.log_format == "json")
    # The same server and options as `payhook serve`, so that only the application differs.
    run_http(BareInsert(settings), host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
