"""`payhook serve`: the webhook receiver and the API, under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from worker.http_app import create_http_app
from worker.runtime import start_runtime
from worker.settings import Settings


def serve_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    app = create_http_app(start_runtime(settings))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0
