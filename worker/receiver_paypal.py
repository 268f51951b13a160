"""POST /webhooks/paypal: verified offline with PayPal's certificate, stored, published."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from domain.events import MalformedEvent
from domain.providers import paypal
from tasks.registering import store_delivery
from worker.deps import Runtime
from worker.http_errors import RETRY_AFTER_S, HttpError, database_unavailable
from worker.metrics import DELIVERIES_RECEIVED
from worker.receiver import read_body
from worker.settings import Settings
from worker.signing.errors import SignatureError
from worker.signing.paypal import (
    CertificateUnavailable,
    PayPalCertificates,
    load_roots,
    verify_paypal,
)

# Kept with each delivery: the signature headers let an operator check a delivery again.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-auth-algo",
    "paypal-cert-url",
)

log = logging.getLogger("payhook.receiver")
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/paypal", status_code=202)
async def paypal_webhook(request: Request, rt: Runtime) -> JSONResponse:
    webhook_id = rt.settings.paypal_webhook_id
    if not webhook_id:
        raise HttpError(404, "provider paypal is not configured")
    body = await read_body(request, rt.settings.max_body_bytes)
    certificates = await run_in_threadpool(certificates_of, request, rt.settings)
    try:
        # In the thread pool: the first use of a certificate URL fetches it.
        await run_in_threadpool(
            verify_paypal,
            body,
            request.headers,
            webhook_id,
            certificates,
            rt.now(),
            rt.settings.signature_tolerance_s,
        )
    except SignatureError as error:
        raise _answer(401, error.reason) from None
    except CertificateUnavailable as error:
        # Not the sender's fault, and it may pass: PayPal retries a 503 like any non-2xx.
        log.warning("PayPal certificate unavailable: %s", error)
        raise _answer(
            503, "PayPal's certificate could not be fetched, try again later", RETRY_AFTER_S
        ) from None
    try:
        event = paypal.parse(body)
    except MalformedEvent as error:
        raise _answer(400, f"malformed event: {error}") from None
    headers = json.dumps(
        {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    )
    try:
        delivery_id = await run_in_threadpool(
            store_delivery,
            rt.unit_of_work(),
            event,
            headers=headers,
            body=body,
            received_at=rt.now(),
        )
    except SQLAlchemyError:
        DELIVERIES_RECEIVED.labels(provider=paypal.PROVIDER, answer="503").inc()
        raise database_unavailable() from None
    # Durable now: a failed publish is left to the sweeper, PayPal still gets its 2xx.
    await run_in_threadpool(rt.try_publish, delivery_id)
    DELIVERIES_RECEIVED.labels(provider=paypal.PROVIDER, answer="202").inc()
    return JSONResponse({"delivery_id": delivery_id}, status_code=202)


def certificates_of(request: Request, settings: Settings) -> PayPalCertificates:
    """The process's PayPal certificate cache, built at the first PayPal delivery.

    It lives on `app.state.paypal_certificates`; tests put one there with their own fetch
    and trust roots.
    """
    state = request.app.state
    certificates: PayPalCertificates | None = getattr(state, "paypal_certificates", None)
    if certificates is None:
        certificates = PayPalCertificates(
            settings.paypal_hosts(), load_roots(settings.paypal_ca_bundle)
        )
        state.paypal_certificates = certificates
    return certificates


def _answer(status: int, reason: str, retry_after: int | None = None) -> HttpError:
    DELIVERIES_RECEIVED.labels(provider=paypal.PROVIDER, answer=str(status)).inc()
    return HttpError(status, reason, retry_after=retry_after)
