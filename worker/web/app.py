"""The ASGI application: webhooks, the API, health and metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from tasks.storage.intake import Intake
from worker.metrics import BROKER_UP
from worker.runtime import ProcessRuntime
from worker.web import adyen, api, paypal, standard, stripe
from worker.web.deps import bearer_refusal
from worker.web.dispatch import WebhookDispatch
from worker.web.errors import HttpError
from worker.web.limits import BoundedBodies
from worker.web.metrics import WebhookMetrics
from worker.web.publisher import Publisher

log = logging.getLogger("payhook.web")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OPEN_WAIT_S = 10.0  # how long a starting server process waits for its webhook connections


def create_http_app(rt: ProcessRuntime) -> FastAPI:
    app = FastAPI(title="payhook", version="0.1.0", lifespan=_lifespan)
    app.state.runtime = rt
    # PostgreSQL: webhooks stored from the event loop, and published from it on Redis.
    app.state.intake = _intake(rt)
    app.state.publisher = Publisher(rt.publish_once, rt.try_publish, inline=rt.settings.uses_redis)
    receivers = (stripe.router, standard.router, adyen.router, paypal.router)
    # Innermost: a webhook POST is answered by its receiver, timed by WebhookMetrics around it.
    app.add_middleware(WebhookDispatch, routes=[r for router in receivers for r in router.routes])
    app.add_middleware(WebhookMetrics)
    # Outermost: a body is bounded (and /api's token checked) before any route reads it.
    app.add_middleware(BoundedBodies, refuse_token=lambda header: bearer_refusal(rt, header))
    for router in receivers:
        app.include_router(router)
    app.include_router(api.router)

    @app.exception_handler(HttpError)
    async def _http_error(_: Request, error: HttpError) -> Response:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        """Ready = the database is reachable: a delivery can be stored durably. The broker's
        state is reported, not required: the sweeper publishes what was stored meanwhile."""
        database, broker = await run_in_threadpool(_reachable, rt)
        BROKER_UP.set(1 if broker else 0)
        state = {
            "database": "reachable" if database else "unreachable",
            "broker": "reachable" if broker else "unreachable",
        }
        if not database:
            return JSONResponse({"status": "unavailable", **state}, 503)
        return JSONResponse({"status": "ready", **state})

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return app


def _intake(rt: ProcessRuntime) -> Intake | None:
    settings = rt.settings
    if make_url(settings.database).get_backend_name() != "postgresql":
        return None
    return Intake(
        settings.database,
        size=settings.db_pool_size,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        prepared_statements=settings.db_prepared_statements,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    rt: ProcessRuntime = app.state.runtime
    intake: Intake | None = app.state.intake
    if rt.fixed_pool:
        # As many request threads as pooled connections, every connection open before the
        # first request: a request never waits for a connection, nor opens one.
        to_thread.current_default_thread_limiter().total_tokens = rt.settings.db_pool_size
        await run_in_threadpool(_open_pool, rt)
        if intake is not None and not await intake.open(wait_s=OPEN_WAIT_S):
            log.warning("database unreachable at start: webhooks answer 503 until it is back")
    try:
        yield
    finally:
        if intake is not None:
            await intake.close()


def _registry() -> CollectorRegistry:
    """This process's metrics; with PROMETHEUS_MULTIPROC_DIR set (`serve --workers N`), the
    sum of every server process's, whichever process answers the scrape."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def _open_pool(rt: ProcessRuntime) -> None:
    if rt.engine.dialect.name == "sqlite":
        return  # no pool: SQLite opens a connection per unit of work
    held = []
    try:
        for _ in range(rt.settings.db_pool_size):
            held.append(rt.engine.connect())
    except SQLAlchemyError as error:
        # Not fatal: requests answer 503 until the database is back, and reconnect then.
        log.warning("database unreachable at start: %s", type(error).__name__)
    finally:
        for conn in held:
            conn.close()


def _reachable(rt: ProcessRuntime) -> tuple[bool, bool]:
    """(database reachable, broker reachable)."""
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = True
    except Exception:  # noqa: BLE001  (any failure means "not reachable")
        database = False
    try:
        with rt.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        broker = True
    except Exception:  # noqa: BLE001
        broker = False
    return database, broker
