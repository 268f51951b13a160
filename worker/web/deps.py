"""Request dependencies: the process runtime, and the bearer token that opens /api."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from worker.runtime import ProcessRuntime
from worker.web.errors import HttpError


def runtime_of(request: Request) -> ProcessRuntime:
    rt: ProcessRuntime = request.app.state.runtime
    return rt


def authorized(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> ProcessRuntime:
    rt = runtime_of(request)
    refusal = bearer_refusal(rt, authorization)
    if refusal is not None:
        raise HttpError(401, refusal)
    return rt


def bearer_refusal(rt: ProcessRuntime, authorization: str | None) -> str | None:
    """Why this Authorization header does not open /api; None when it does."""
    token = rt.settings.api_token
    if token is None or not token.get_secret_value():
        # An empty token would match "Authorization: Bearer" with nothing after it.
        return "the API is closed: PAYHOOK_API_TOKEN is not set"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        return "missing or wrong bearer token"
    return None


Runtime = Annotated[ProcessRuntime, Depends(runtime_of)]
ApiRuntime = Annotated[ProcessRuntime, Depends(authorized)]
