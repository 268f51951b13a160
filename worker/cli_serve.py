"""`payhook serve`: the webhook receiver and the API, under uvicorn."""

from __future__ import annotations

import argparse

from worker.http_app import create_http_app
from worker.http_server import run_http
from worker.runtime import start_runtime
from worker.settings import Settings


def serve_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    app = create_http_app(start_runtime(settings))
    run_http(app, host=args.host, port=args.port)
    return 0
