"""POST /webhooks/stripe: the Stripe-Signature checked, then stored, published, answered 202."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from domain.providers import stripe
from worker.signing.errors import SignatureError
from worker.signing.stripe import verify_stripe
from worker.web.deps import Runtime
from worker.web.errors import HttpError
from worker.web.receiving import accept_one, parse_event, read_body, refused

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/stripe", status_code=202)
async def stripe_webhook(request: Request, rt: Runtime) -> JSONResponse:
    secrets = rt.settings.stripe_secrets()
    if not secrets:
        raise HttpError(404, "provider stripe is not configured")
    body = await read_body(request, rt.settings.max_body_bytes)
    try:
        verify_stripe(
            body,
            request.headers.get("stripe-signature"),
            secrets,
            int(rt.now().timestamp()),
            rt.settings.signature_tolerance_s,
        )
    except SignatureError as error:
        raise refused("stripe", error) from None
    event = parse_event(lambda: stripe.parse(body), "stripe", body)
    return await accept_one(request, event, body)
