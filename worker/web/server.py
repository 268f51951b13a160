"""How payhook serves HTTP: one set of uvicorn options for the receiver (and its benchmark twin)."""

from __future__ import annotations

from typing import Any

import uvicorn


def run_http(app: Any, *, host: str, port: int, workers: int = 1) -> None:
    """Serve `app` (an ASGI app, or a factory's import string for several `workers`)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers,
        factory=isinstance(app, str),
        log_level="info",
        # No line per request: /metrics times every webhook request by route and status, and
        # each delivery's outcome is logged by the worker; an access log cost ~10% of the
        # receiver's CPU per delivery.
        access_log=False,
        timeout_keep_alive=5,
        # uvloop when installed; h11 whatever else is: it refuses headers past 64 KiB.
        loop="auto",
        http="h11",
        h11_max_incomplete_event_size=64 * 1024,
    )
