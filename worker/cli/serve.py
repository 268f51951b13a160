"""`payhook serve`: the webhook receiver and the API, under uvicorn."""

from __future__ import annotations

import argparse

from worker.runtime import start_runtime
from worker.settings import Settings
from worker.web.app import create_http_app
from worker.web.server import run_http


def serve_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    app = create_http_app(start_runtime(settings))
    run_http(app, host=args.host, port=args.port)
    return 0
