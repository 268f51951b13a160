"""One-line JSON errors: the status and why, never a secret or a stack trace."""

from __future__ import annotations

from starlette.responses import JSONResponse

RETRY_AFTER_S = 30


class HttpError(Exception):
    def __init__(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return JSONResponse({"error": self.reason}, status_code=self.status, headers=headers)


def database_unavailable() -> HttpError:
    return HttpError(503, "database unavailable, try again later", retry_after=RETRY_AFTER_S)
