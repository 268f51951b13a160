"""What the host application registers: orders, their payments, and incoming deliveries."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import Column
from sqlalchemy.exc import IntegrityError

from domain.events import PaymentEvent
from tasks.storage.tables import deliveries, disputes, payment_aliases, payments, refunds
from tasks.storage.uow import UnitOfWork


def _length(column: Column[str]) -> int:
    length: int = column.type.length  # type: ignore[attr-defined]
    return length


# The longest value each event field may have: the columns that store it or look it up.
_LONGEST = {
    "provider": _length(deliveries.c.provider),
    "event_id": _length(deliveries.c.event_id),
    "event_type": _length(deliveries.c.event_type),
    "payment_reference": _length(payments.c.provider_reference),
    "refund_reference": _length(refunds.c.refund_reference),
    "alias": _length(payment_aliases.c.alias),
    "dispute_reference": _length(disputes.c.dispute_reference),
}


class AlreadyExists(Exception):
    """A unique reference that is already taken."""


class Unstorable(ValueError):
    """A delivery the database cannot hold as it is (a field too long, a NUL character): the
    same answer on every retry, so a reason for the sender, never "try again"."""


class OrderNotFound(LookupError):
    pass


class CurrencyDiffers(ValueError):
    pass


def create_order(
    uow: UnitOfWork, *, reference: str, total: int, currency: str, now: datetime
) -> int:
    with uow:
        try:
            order_id = uow.payments.add_order(
                reference=reference, total=total, currency=currency, now=now
            )
        except IntegrityError:
            raise AlreadyExists(f"order {reference!r} already exists") from None
        uow.commit()
    return order_id


def create_payment(
    uow: UnitOfWork,
    *,
    order_reference: str,
    provider: str,
    provider_reference: str,
    amount: int,
    currency: str,
    now: datetime,
) -> int:
    with uow:
        order = uow.payments.find_order(order_reference)
        if order is None:
            raise OrderNotFound(f"no order {order_reference!r}")
        if order.currency != currency:
            raise CurrencyDiffers(f"order {order_reference!r} is in {order.currency}")
        try:
            payment_id = uow.payments.add_payment(
                order_id=order.id,
                provider=provider,
                provider_reference=provider_reference,
                amount=amount,
                currency=currency,
                now=now,
            )
        except IntegrityError:
            raise AlreadyExists(f"payment {provider}/{provider_reference} already exists") from None
        uow.commit()
    return payment_id


def store_deliveries(
    uow: UnitOfWork, items: list[tuple[PaymentEvent, str, bytes]], *, received_at: datetime
) -> list[int]:
    """Store several deliveries (event, headers JSON, body) all together or not at all."""
    for event, _, _ in items:
        check_storable(event)
    with uow:
        ids = [
            uow.deliveries.add(
                provider=event.provider,
                event_id=event.event_id,
                event_type=event.event_type,
                received_at=received_at,
                headers=headers,
                body=body,
            )
            for event, headers, body in items
        ]
        uow.commit()
    return ids


def store_delivery(
    uow: UnitOfWork, event: PaymentEvent, *, headers: str, body: bytes, received_at: datetime
) -> int:
    """Make a verified delivery durable; it is committed before the provider gets its 2xx."""
    (delivery_id,) = store_deliveries(uow, [(event, headers, body)], received_at=received_at)
    return delivery_id


def check_storable(event: PaymentEvent) -> None:
    """Raise Unstorable, naming the field, for what PostgreSQL would refuse deterministically."""
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise Unstorable(f"{field.name} contains a NUL character")
        longest = _LONGEST.get(field.name)
        if longest is not None and len(value) > longest:
            raise Unstorable(f"{field.name} is longer than {longest} characters")
