"""POST /webhooks/paypal: verified offline with PayPal's certificate, stored, published."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from domain.providers import paypal
from worker.metrics import DELIVERIES_RECEIVED
from worker.settings import Settings
from worker.signing.errors import SignatureError
from worker.signing.paypal import (
    CertificateUnavailable,
    PayPalCertificates,
    load_roots,
    verify_paypal,
)
from worker.web.deps import Runtime
from worker.web.errors import RETRY_AFTER_S, HttpError
from worker.web.receiving import accept, kept_headers, parse_event, read_body

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

# More than the certificate fetches allowed at once: verifying with a cached certificate
# never waits behind a fetch.
VERIFYING_THREADS = 4

log = logging.getLogger("payhook.receiver")
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/paypal", status_code=202)
async def paypal_webhook(request: Request, rt: Runtime) -> JSONResponse:
    webhook_id = rt.settings.paypal_webhook_id
    if not webhook_id:
        raise HttpError(404, "provider paypal is not configured")
    body = await read_body(request, rt.settings.max_body_bytes)
    # On PayPal's own few threads: the first use of a certificate URL fetches it, and a slow
    # fetch must never hold a thread of the shared pool that the other receivers store with.
    verifying = _verifying_pool(request)
    loop = asyncio.get_running_loop()
    certificates = await loop.run_in_executor(verifying, certificates_of, request, rt.settings)
    try:
        await loop.run_in_executor(
            verifying,
            functools.partial(
                verify_paypal,
                body,
                request.headers,
                webhook_id,
                certificates,
                rt.now(),
                rt.settings.signature_tolerance_s,
            ),
        )
    except SignatureError as error:
        raise _answer(401, error.reason) from None
    except CertificateUnavailable as error:
        # Not the sender's fault, and it may pass: PayPal retries a 503 like any non-2xx.
        log.warning("PayPal certificate unavailable: %s", error)
        raise _answer(
            503, "PayPal's certificate could not be fetched, try again later", RETRY_AFTER_S
        ) from None
    event = parse_event(lambda: paypal.parse(body), paypal.PROVIDER, body)
    headers = kept_headers(request, KEPT_HEADERS)
    (delivery_id,) = await accept(request, paypal.PROVIDER, [(event, body)], headers, answer="202")
    return JSONResponse({"delivery_id": delivery_id}, status_code=202)


def _verifying_pool(request: Request) -> ThreadPoolExecutor:
    """The process's PayPal threads, made at the first PayPal delivery."""
    state = request.app.state
    pool: ThreadPoolExecutor | None = getattr(state, "paypal_threads", None)
    if pool is None:
        pool = ThreadPoolExecutor(VERIFYING_THREADS, thread_name_prefix="paypal-verify")
        state.paypal_threads = pool
    return pool


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
