"""What the database can hold: each event field's longest value, checked before storing, so
that a delivery PostgreSQL would refuse on every retry is a clear 400, never a 503."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Column

from domain.events import PaymentEvent
from tasks.storage.errors import Unstorable
from tasks.storage.tables import deliveries, disputes, payment_aliases, payments, refunds


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
