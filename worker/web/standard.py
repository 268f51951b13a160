"""POST /webhooks/standard/{source}: Standard Webhooks, one secret set per source."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from domain.providers import standard
from worker.signing.errors import SignatureError
from worker.signing.standard import verify_standard
from worker.web.deps import Runtime
from worker.web.errors import HttpError
from worker.web.receiving import accept_one, parse_event, read_body, refused

router = APIRouter(tags=["webhooks"])

SIGNED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@router.post("/webhooks/standard/{source}", status_code=202)
async def standard_webhook(source: str, request: Request, rt: Runtime) -> JSONResponse:
    secrets = rt.settings.standard_secrets().get(source)
    if not secrets:
        raise HttpError(404, f"unknown Standard Webhooks source {source!r}")
    body = await read_body(request, rt.settings.max_body_bytes)
    headers = {name: request.headers[name] for name in SIGNED_HEADERS if name in request.headers}
    try:
        webhook_id = verify_standard(
            body, headers, secrets, int(rt.now().timestamp()), rt.settings.signature_tolerance_s
        )
    except SignatureError as error:
        raise refused(source, error) from None
    event = parse_event(lambda: standard.parse(source, webhook_id, body), source, body, webhook_id)
    return await accept_one(request, event, body)
