"""A small local host endpoint for the demo and the soak: it verifies every notification with
the `standardwebhooks` library and keeps what it received."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    message_id: str
    body: dict[str, Any]


@dataclass
class HostEndpoint:
    secret: str
    received: list[Received] = field(default_factory=list)
    unverified: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not started")
        return f"http://127.0.0.1:{self._server.server_port}/notifications"

    def start(self) -> HostEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = endpoint.take({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def take(self, headers: dict[str, str], body: bytes) -> int:
        try:
            message = Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, json.JSONDecodeError):
            with self._lock:
                self.unverified += 1
            return 400
        with self._lock:
            self.received.append(Received(headers["webhook-id"], message))
        return 204

    def distinct(self) -> list[Received]:
        """Each notification once (a host deduplicates by webhook-id), as first received."""
        seen: dict[str, Received] = {}
        with self._lock:
            for item in self.received:
                seen.setdefault(item.message_id, item)
        return list(seen.values())
