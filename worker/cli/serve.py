"""`payhook serve`: the webhook receiver and the API, under uvicorn, in `--workers` processes.

Each server process builds its own runtime (settings, engine, Celery producer) after uvicorn
started it, with a fixed pool of PAYHOOK_DB_POOL_SIZE connections opened before it takes a
request and as many request threads: no request ever waits for, or opens, a connection.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fastapi import FastAPI

from worker.logs import configure_logging
from worker.runtime import start_runtime
from worker.settings import Settings, load_settings
from worker.web.app import MULTIPROC_ENV, create_http_app
from worker.web.server import run_http

APP_FACTORY = "worker.cli.serve:server_process_app"


def serve_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    _fresh_metrics_dir()
    if args.workers == 1:
        run_http(_app(settings), host=args.host, port=args.port)
    else:
        # uvicorn's multi-process mode: a supervisor starts each server process, which
        # imports the factory and builds its app (settings are read again, once, there).
        run_http(APP_FACTORY, host=args.host, port=args.port, workers=args.workers)
    return 0


def server_process_app() -> FastAPI:
    """The app of one server process of `payhook serve --workers N`."""
    settings = load_settings()
    configure_logging(json=settings.log_format == "json")
    return _app(settings)


def _fresh_metrics_dir() -> None:
    """Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): files of an earlier run would be
    summed in, so the directory is emptied before any server process starts."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def _app(settings: Settings) -> FastAPI:
    return create_http_app(start_runtime(settings, fixed_pool=True))
