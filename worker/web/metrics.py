"""Timing of every webhook request, and 401 answers counted as signature failures.

A middleware sees every receiver (Stripe, Standard Webhooks, Adyen, PayPal) the same way. Labels
come from the matched route's template, never from the raw path, so that a stream of requests to
made-up sources cannot create new series; a 401 is only answered for a configured source.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.metrics import SIGNATURE_FAILURES, WEBHOOK_REQUEST_DURATION

WEBHOOKS = "/webhooks/"


class WebhookMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(WEBHOOKS):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the application answers

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, answered)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            WEBHOOK_REQUEST_DURATION.labels(route=template, status=str(status)).observe(
                time.perf_counter() - started
            )
            if status == 401:
                provider = scope.get("path_params", {}).get("source") or template.rsplit("/")[-1]
                SIGNATURE_FAILURES.labels(provider=provider).inc()
