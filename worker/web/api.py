"""The operator and host API under /api, behind a bearer token."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from domain.money import InvalidCurrency, normalize_currency
from tasks.confirming import ConfirmStatus, confirm_payment
from tasks.notifications import event_view
from tasks.registering import (
    AlreadyExists,
    CurrencyDiffers,
    OrderNotFound,
    create_order,
    create_payment,
)
from tasks.replaying import replay_delivery
from tasks.storage import outbox, queries
from worker.runtime import ProcessRuntime
from worker.web.deps import ApiRuntime
from worker.web.errors import HttpError, database_unavailable

# Ids and amounts are 64-bit in the database: anything larger is a 422, not a crash.
BIGINT_MAX = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]

_CONFIRM_ANSWERS = {
    ConfirmStatus.CONFIRMED: 200,
    ConfirmStatus.ALREADY_CONFIRMED: 409,
    ConfirmStatus.INVALID_TRANSITION: 409,
}


def _currency(value: str) -> str:
    try:
        return normalize_currency(value)
    except InvalidCurrency as error:
        raise ValueError(str(error)) from None


class OrderIn(BaseModel):
    reference: str = Field(min_length=1, max_length=255)
    total: int = Field(ge=0, le=BIGINT_MAX, description="in the currency's minor unit")
    currency: str

    _check_currency = field_validator("currency")(_currency)


class PaymentIn(BaseModel):
    order_reference: str = Field(min_length=1, max_length=255)
    provider: str = Field(min_length=1, max_length=64)
    provider_reference: str = Field(min_length=1, max_length=255)
    amount: int = Field(gt=0, le=BIGINT_MAX, description="in the currency's minor unit")
    currency: str

    _check_currency = field_validator("currency")(_currency)


router = APIRouter(prefix="/api", tags=["api"])


@router.post("/orders", status_code=201)
def post_order(order: OrderIn, rt: ApiRuntime) -> dict[str, Any]:
    with _database():
        try:
            create_order(
                rt.unit_of_work(),
                reference=order.reference,
                total=order.total,
                currency=order.currency,
                now=rt.now(),
            )
        except AlreadyExists as error:
            raise HttpError(409, str(error)) from None
        with _read(rt) as conn:
            return _found(queries.order(conn, order.reference), "order")


@router.get("/orders/{reference}")
def get_order(reference: str, rt: ApiRuntime) -> dict[str, Any]:
    with _read(rt) as conn:
        return _found(queries.order(conn, reference), "order")


@router.post("/payments", status_code=201)
def post_payment(payment: PaymentIn, rt: ApiRuntime) -> dict[str, Any]:
    with _database():
        try:
            payment_id = create_payment(
                rt.unit_of_work(),
                order_reference=payment.order_reference,
                provider=payment.provider,
                provider_reference=payment.provider_reference,
                amount=payment.amount,
                currency=payment.currency,
                now=rt.now(),
                publish=rt.try_publish,  # wakes the deliveries that arrived before it
            )
        except OrderNotFound as error:
            raise HttpError(404, str(error)) from None
        except (AlreadyExists, CurrencyDiffers) as error:
            raise HttpError(409, str(error)) from None
        with _read(rt) as conn:
            return _found(queries.payment(conn, payment_id), "payment")


@router.get("/payments/{payment_id}")
def get_payment(payment_id: RowId, rt: ApiRuntime) -> dict[str, Any]:
    with _read(rt) as conn:
        return _found(queries.payment(conn, payment_id), "payment")


@router.post("/payments/{payment_id}/confirm")
async def post_confirm(
    payment_id: RowId,
    request: Request,
    rt: ApiRuntime,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    body = await request.body()
    fingerprint = hashlib.sha256(request.url.path.encode() + b"\n" + body).hexdigest()
    with _database():
        result = await run_in_threadpool(
            lambda: confirm_payment(
                payment_id,
                rt.unit_of_work(),
                rt.now(),
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint,
                publish=rt.try_publish,  # wakes deliveries waiting for the capture
            )
        )
    if result.status is ConfirmStatus.CONFIRMED and not result.replayed:
        await run_in_threadpool(rt.request_relay)  # its notifications are committed
    if result.status is ConfirmStatus.NOT_FOUND:
        raise HttpError(404, f"no payment {payment_id}")
    if result.status is ConfirmStatus.KEY_REUSED:
        raise HttpError(422, "this Idempotency-Key was used with another request")
    answer = {"status": result.status.value, "payment": result.payment}
    if result.status is ConfirmStatus.ALREADY_CONFIRMED:
        answer["error"] = "payment is already confirmed"
    elif result.status is ConfirmStatus.INVALID_TRANSITION:
        answer["error"] = "payment cannot be confirmed from its current state"
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return JSONResponse(answer, status_code=_CONFIRM_ANSWERS[result.status], headers=headers)


@router.post("/deliveries/{delivery_id}/replay", status_code=202)
def post_replay(delivery_id: RowId, rt: ApiRuntime) -> JSONResponse:
    with _database():
        replay = replay_delivery(delivery_id, rt.unit_of_work(), rt.now(), rt.try_publish)
    if replay is None:
        raise HttpError(404, "no such delivery")
    if not replay.replayed:
        raise HttpError(409, f"delivery {delivery_id} not replayed: {replay.why}")
    return JSONResponse(
        {"delivery_id": delivery_id, "replayed": True, "why": replay.why}, status_code=202
    )


@router.get("/deliveries/{delivery_id}")
def get_delivery(delivery_id: RowId, rt: ApiRuntime) -> dict[str, Any]:
    with _read(rt) as conn:
        return _found(queries.delivery(conn, delivery_id), "delivery")


@router.get("/deliveries")
def list_deliveries(
    rt: ApiRuntime,
    status: str | None = None,
    provider: str | None = None,
    outcome: str | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 50,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> dict[str, Any]:
    with _read(rt) as conn:
        items = queries.list_deliveries(
            conn, status=status, provider=provider, outcome=outcome, limit=limit, before=before
        )
    following = items[-1]["id"] if len(items) == limit else None
    return {"deliveries": items, "next_before": following}


@router.get("/events")
def list_events(
    rt: ApiRuntime,
    after: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 100,
) -> list[dict[str, Any]]:
    """Host notifications after id `after`, in id order; an id is listed only once every
    smaller one is committed or rolled back, so a cursor never passes one that commits later."""
    with _read(rt) as conn:
        return [event_view(row) for row in outbox.feed(conn, after=after, limit=limit)]


def _found(value: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        raise HttpError(404, f"no such {what}")
    return value


@contextmanager
def _database() -> Iterator[None]:
    try:
        yield
    except OperationalError:
        raise database_unavailable() from None


@contextmanager
def _read(rt: ProcessRuntime) -> Iterator[Connection]:
    try:
        with rt.engine.connect() as conn:
            yield conn
    except SQLAlchemyError as error:
        if isinstance(error, OperationalError):
            raise database_unavailable() from None
        raise
