"""`payhook flower`: Flower for this app, behind basic auth, and read-only.

Flower's API can revoke and terminate tasks, shut workers down and resize their pools. payhook's
Flower is for looking only, in two independent layers:

- a routing rule placed before every Flower route answers 403 to any method but GET and HEAD,
  whatever the URL; it does not depend on the Flower version, and no Flower endpoint that
  changes anything answers GET;
- Flower's own `read_only` option, where the installed version has it, also hides the buttons.

Flower is built here with its options set in code: no `flowerconfig.py` and no `FLOWER_*`
variable can loosen them (FLOWER_UNAUTHENTICATED_API, which Flower reads at every request, is
removed from the environment, and without a password a rule answers the API 401 itself).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from celery import Celery
from flower.app import Flower
from flower.options import default_options
from flower.urls import settings as flower_settings
from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule
from tornado.web import RequestHandler

from worker.settings import Settings
from worker.taskqueue.app import create_app

log = logging.getLogger("payhook.flower")

SAFE_METHODS = frozenset({"GET", "HEAD"})
REFUSAL = "payhook flower is read-only: only GET and HEAD are answered\n"
API_CLOSED = "payhook flower without a password keeps its API closed\n"
# Flower reads this at every request: set, it opens the API to anyone and allows any origin
# to read every page. payhook's Flower ignores it.
UNAUTHENTICATED_API = "FLOWER_UNAUTHENTICATED_API"


class UnsafeMethod(Matcher):
    """Matches every request that could change something."""

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return None if request.method in SAFE_METHODS else {}


class ReadOnlyRefusal(RequestHandler):
    """403 for any request that `UnsafeMethod` matched, before Flower sees it."""

    def check_xsrf_cookie(self) -> None:
        """Nothing to protect: this handler never acts."""

    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(REFUSAL)


class ApiPath(Matcher):
    """Matches Flower's API (`/api/…`)."""

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        path = request.path or ""
        return {} if path == "/api" or path.startswith("/api/") else None


class ApiClosed(RequestHandler):
    """401 for the API of a Flower that has no password (`--local-only`)."""

    def check_xsrf_cookie(self) -> None:
        """Nothing to protect: this handler never acts."""

    def prepare(self) -> None:
        self.set_status(401)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(API_CLOSED)


def flower_command(settings: Settings, args: argparse.Namespace, _extra: list[str]) -> int:
    auth = settings.flower_basic_auth
    address = args.address or ""
    if args.local_only:
        if address not in {"", "127.0.0.1"}:
            print("payhook: --local-only binds 127.0.0.1: leave out --address", file=sys.stderr)
            return 2
        address = "127.0.0.1"
    elif auth is None:
        print(
            "payhook: PAYHOOK_FLOWER_BASIC_AUTH (user:password) is not set: set it, "
            "or run payhook flower --local-only",
            file=sys.stderr,
        )
        return 2
    run_flower(
        create_app(settings),
        address=address,
        port=args.port,
        basic_auth=None if auth is None else auth.get_secret_value(),
    )
    return 0


def build_flower(
    app: Celery, *, address: str, port: int, basic_auth: str | None
) -> Any:  # flower.app.Flower, which is untyped
    """A Flower application for `app`, authenticated by `basic_auth` if given, read-only."""
    options = default_options
    options.address = address
    options.port = port
    options.basic_auth = [basic_auth] if basic_auth else []
    options.auth = ""  # no OAuth: basic auth or, with --local-only, the loopback interface
    options.url_prefix = ""
    # Workers send task events by their configuration: Flower needs no control broadcast.
    options.enable_events = False
    options.persistent = False
    if "read_only" in options:  # Flower versions that have it
        options.read_only = True
    if os.environ.pop(UNAUTHENTICATED_API, None) is not None:
        log.warning("%s is ignored: payhook flower never opens its API", UNAUTHENTICATED_API)
    flower = Flower(capp=app, options=options, **flower_settings)
    flower.default_router.rules.insert(0, Rule(UnsafeMethod(), ReadOnlyRefusal))
    if not basic_auth:
        # Whatever Flower's version reads from the environment: no password, no API.
        flower.default_router.rules.insert(1, Rule(ApiPath(), ApiClosed))
    return flower


def run_flower(app: Celery, *, address: str, port: int, basic_auth: str | None) -> None:
    """Serve Flower until SIGTERM or Ctrl-C."""
    flower = build_flower(app, address=address, port=port, basic_auth=basic_auth)
    bound = flower.start_http_server()
    log.info(
        "flower on http://%s:%s/ (%s, read-only)",
        address or "0.0.0.0",  # noqa: S104  (what an empty address means, for the log line)
        bound,
        "basic auth" if basic_auth else "no auth: loopback only",
    )

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        flower.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        flower.stop()
