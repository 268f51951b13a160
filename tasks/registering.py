"""What the host application registers: orders, their payments, and incoming deliveries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.events import PaymentEvent
from tasks.storage.errors import AlreadyExists, Unstorable
from tasks.storage.limits import check_storable
from tasks.storage.repositories import intake_fingerprint
from tasks.storage.uow import UnitOfWork

__all__ = [
    "AlreadyExists",
    "CurrencyDiffers",
    "OrderNotFound",
    "Unstorable",
    "check_storable",
    "create_order",
    "create_payment",
]


class OrderNotFound(LookupError):
    pass


class CurrencyDiffers(ValueError):
    pass


def create_order(
    uow: UnitOfWork, *, reference: str, total: int, currency: str, now: datetime
) -> int:
    with uow:
        order_id = uow.payments.add_order(
            reference=reference, total=total, currency=currency, now=now
        )
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
    publish: Callable[[int], object] | None = None,
) -> int:
    """Register a payment; deliveries that arrived before it (waiting with `no_payment`) are
    woken and, when `publish` is given, published after the commit."""
    with uow:
        order = uow.payments.find_order(order_reference)
        if order is None:
            raise OrderNotFound(f"no order {order_reference!r}")
        if order.currency != currency:
            raise CurrencyDiffers(f"order {order_reference!r} is in {order.currency}")
        payment_id = uow.payments.add_payment(
            order_id=order.id,
            provider=provider,
            provider_reference=provider_reference,
            amount=amount,
            currency=currency,
            now=now,
        )
        # Without a publisher they wait for their next attempt, as they would.
        woken = (
            uow.deliveries.wake_awaiting(now, provider=provider, reference=provider_reference)
            if publish is not None
            else []
        )
        uow.commit()
    for delivery_id in woken:
        if publish is not None:
            publish(delivery_id)
    return payment_id


def store_deliveries(
    uow: UnitOfWork, items: list[tuple[PaymentEvent, str, bytes]], *, received_at: datetime
) -> list[int]:
    """Store several deliveries (event, headers JSON, body) all together or not at all; a
    single one by one INSERT that commits as it runs (on PostgreSQL one round trip, with no
    BEGIN and COMMIT around it: the receiver's hot path)."""
    for event, _, _ in items:
        check_storable(event)
    with uow.autocommitting() if len(items) == 1 else uow:
        ids = [
            uow.deliveries.add(
                provider=event.provider,
                event_id=event.event_id,
                event_type=event.event_type,
                received_at=received_at,
                headers=headers,
                body=body,
                fingerprint=intake_fingerprint(event),
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
