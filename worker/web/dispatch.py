"""POST /webhooks/…: each receiver's endpoint called straight from the middleware stack.

The receivers are declared as FastAPI routes (stripe.py, standard.py, adyen.py, paypal.py): that
declaration is their OpenAPI schema, and FastAPI still answers whatever none of them takes (another
method, an unknown path). Their one dependency is the runtime, so a POST that matches one is
answered here with the same endpoint, the same scope (the matched route and its path
parameters, which WebhookMetrics reads) and the same HttpError answers, without FastAPI's router,
dependency resolution and exception middleware: they cost about a quarter of the receiver's CPU
per delivery. Any other exception goes on up to the server error middleware, as it did.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.web.deps import runtime_of
from worker.web.errors import HttpError

WEBHOOKS = "/webhooks/"


class WebhookDispatch:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = [route for route in routes if isinstance(route, APIRoute)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith(WEBHOOKS)
        ):
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    response = await _answer(route, Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _answer(route: APIRoute, request: Request) -> Response:
    """What the route's endpoint answers, given what FastAPI would have resolved for it: the
    request, the runtime, and the path parameters (strings, as the endpoints declare them)."""
    try:
        response: Response = await route.endpoint(
            request=request, rt=runtime_of(request), **request.path_params
        )
    except HttpError as error:
        return error.response()
    return response
