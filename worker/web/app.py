"""The ASGI application: webhooks, the API, health and metrics."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from worker.metrics import BROKER_UP
from worker.runtime import ProcessRuntime
from worker.web import adyen, api, paypal, standard, stripe
from worker.web.deps import bearer_refusal
from worker.web.errors import HttpError
from worker.web.limits import BoundedBodies
from worker.web.metrics import WebhookMetrics


def create_http_app(rt: ProcessRuntime) -> FastAPI:
    app = FastAPI(title="payhook", version="0.1.0")
    app.state.runtime = rt
    app.add_middleware(WebhookMetrics)
    # Outermost: a body is bounded (and /api's token checked) before any route reads it.
    app.add_middleware(BoundedBodies, refuse_token=lambda header: bearer_refusal(rt, header))
    app.include_router(stripe.router)
    app.include_router(standard.router)
    app.include_router(adyen.router)
    app.include_router(paypal.router)
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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


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
