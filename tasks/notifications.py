"""Host notifications: written with the change they tell of, read back as Standard Webhooks
messages for the relay and the pull feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from domain.notifications import changes, message_data
from domain.payments import Order, Payment
from tasks.storage.outbox import Written
from tasks.storage.uow import UnitOfWork


def record_changes(
    uow: UnitOfWork,
    *,
    order_before: Order,
    payment_before: Payment,
    order: Order,
    payment: Payment,
    transition: str | None,
    delivery_id: int | None,
    now: datetime,
) -> int:
    """Write one notification per state change, in the caller's transaction; returns how many."""
    items = [
        Written(
            change.type.value,
            _json(
                message_data(
                    change,
                    order=order,
                    payment=payment,
                    transition=transition,
                    delivery_id=delivery_id,
                )
            ),
        )
        for change in changes(payment_before, payment, order_before, order)
    ]
    uow.outbox.add(
        order_id=order.id, payment_id=payment.id, delivery_id=delivery_id, items=items, now=now
    )
    return len(items)


def message(*, type: str, created_at: datetime, order_sequence: int, data: str) -> dict[str, Any]:
    """The message body `{"type", "timestamp", "data"}`, the same on every retry."""
    fields: dict[str, Any] = json.loads(data)
    ordered = {
        "order_reference": fields.pop("order_reference"),
        "order_sequence": order_sequence,
        **fields,
    }
    return {"type": type, "timestamp": timestamp(created_at), "data": ordered}


def event_view(row: Any) -> dict[str, Any]:
    """A notification as the pull feed lists it: its id, then the message."""
    return {
        "id": row.id,
        **message(
            type=row.type,
            created_at=row.created_at,
            order_sequence=row.order_sequence,
            data=row.data,
        ),
    }


def message_bytes(**row: Any) -> bytes:
    return _json(message(**row)).encode()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
