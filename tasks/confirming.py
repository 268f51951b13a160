"""Manual confirmation through the API: confirmed once, a second time is a conflict."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.outcomes import OutcomeKind
from tasks.notifications import record_changes
from tasks.storage import queries
from tasks.storage.uow import UnitOfWork


class ConfirmStatus(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    INVALID_TRANSITION = "invalid_transition"
    NOT_FOUND = "not_found"
    KEY_REUSED = "key_reused"  # the same Idempotency-Key with another request


@dataclass(frozen=True, slots=True)
class Confirmation:
    status: ConfirmStatus
    payment: dict[str, Any] | None
    replayed: bool = False


def confirm_payment(
    payment_id: int,
    uow: UnitOfWork,
    now: datetime,
    *,
    idempotency_key: str | None = None,
    request_fingerprint: str = "",
    publish: Callable[[int], object] | None = None,
) -> Confirmation:
    """Confirm by hand, locking order then payment like a webhook does; deliveries waiting
    for the capture (a refund that came first) are woken and given to `publish`."""
    with uow:
        if idempotency_key is not None:
            stored = _stored(uow, idempotency_key, request_fingerprint)
            if stored is not None:
                return stored
        locked = uow.payments.lock(payment_id)
        if locked is None:
            return Confirmation(ConfirmStatus.NOT_FOUND, None)
        order, payment = locked
        before, order_before = payment.snapshot(), order.snapshot()
        outcome = payment.confirm_manually(order)
        woken: list[int] = []
        if outcome.kind is OutcomeKind.APPLIED:
            uow.payments.save(order, payment, before, now)
            if publish is not None:
                woken = uow.deliveries.wake_awaiting(now, payment_id=payment_id)
            record_changes(
                uow,
                order_before=order_before,
                payment_before=before,
                order=order,
                payment=payment,
                transition=outcome.transition,
                delivery_id=None,
                now=now,
            )
            status = ConfirmStatus.CONFIRMED
        elif outcome.kind is OutcomeKind.ACKNOWLEDGED_DUPLICATE:
            status = ConfirmStatus.ALREADY_CONFIRMED
        else:
            status = ConfirmStatus.INVALID_TRANSITION
        view = queries.payment(uow.connection, payment_id)
        if idempotency_key is not None and not uow.api_keys.store(
            idempotency_key, request_fingerprint, status.value, json.dumps(view), now
        ):
            uow.rollback()  # a concurrent request with the same key answered first
        else:
            uow.commit()
            for delivery_id in woken:
                if publish is not None:
                    publish(delivery_id)
            return Confirmation(status, view)
    with uow:
        stored = _stored(uow, idempotency_key or "", request_fingerprint)
    if stored is None:
        raise RuntimeError("an idempotency key vanished between two transactions")
    return stored


def _stored(uow: UnitOfWork, key: str, fingerprint: str) -> Confirmation | None:
    found = uow.api_keys.get(key)
    if found is None:
        return None
    stored_fingerprint, status, response = found
    if stored_fingerprint != fingerprint:
        return Confirmation(ConfirmStatus.KEY_REUSED, None)
    return Confirmation(ConfirmStatus(status), json.loads(response), replayed=True)
