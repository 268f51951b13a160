"""The reference worker: a plain Celery app and task confirming a payment in plain psycopg.

One transaction per delivery: lock the delivery (return its outcome if it has one), claim the
event id with INSERT … ON CONFLICT DO NOTHING, lock the order and the payment, update the payment,
set the order's paid sum, record the outcome. Its own queue (`reference`), its own settings;
`python -m worker.tooling.bench.reference.tasks worker …` runs Celery's worker on it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import psycopg
from celery import Celery

QUEUE = "reference"
CONFIRM = "reference.confirm"
EMPTY = "reference.empty"
TRANSIENT = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.OperationalError,
)

LOCK_DELIVERY = (
    "SELECT d.body, o.kind FROM ref_deliveries d "
    "LEFT JOIN ref_outcomes o ON o.delivery_id = d.id WHERE d.id = %s FOR UPDATE OF d"
)
CLAIM = (
    "INSERT INTO ref_claims (event_id, delivery_id) VALUES (%s, %s) "
    "ON CONFLICT DO NOTHING RETURNING delivery_id"
)
LOCK_ORDER = (
    "SELECT id FROM ref_orders WHERE id = "
    "(SELECT order_id FROM ref_payments WHERE reference = %s) FOR UPDATE"
)
LOCK_PAYMENT = (
    "SELECT id, state, amount, order_id FROM ref_payments WHERE reference = %s FOR UPDATE"
)
CONFIRM_PAYMENT = "UPDATE ref_payments SET state = 'confirmed', confirmed_by = %s WHERE id = %s"
SUM_ORDER = (
    "UPDATE ref_orders SET paid = (SELECT coalesce(sum(amount), 0) FROM ref_payments "
    "WHERE order_id = ref_orders.id AND state = 'confirmed') WHERE id = %s"
)
RECORD = "INSERT INTO ref_outcomes (delivery_id, kind, reason, payment_id) VALUES (%s, %s, %s, %s)"

_connection: psycopg.Connection[Any] | None = None


def connection() -> psycopg.Connection[Any]:
    """This process's connection, opened on first use (prefork children each open their own)."""
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ["REFERENCE_DATABASE_URL"], autocommit=True)
    return _connection


def confirm(delivery_id: int) -> dict[str, Any]:
    conn = connection()
    with conn.transaction():
        row = conn.execute(LOCK_DELIVERY, (delivery_id,)).fetchone()
        if row is None:
            return {"delivery_id": delivery_id, "kind": None}
        body, recorded = row
        if recorded is not None:  # redelivered
            return {"delivery_id": delivery_id, "kind": recorded}
        event = json.loads(body)
        obj = event["data"]["object"]
        intent = event["type"].startswith("payment_intent.")
        reference = obj["id"] if intent else obj["payment_intent"]
        amount = obj["amount_received"] if intent else obj["amount_captured"]
        payment_id = None
        if conn.execute(CLAIM, (event["id"], delivery_id)).fetchone() is None:
            kind, reason = "acknowledged_duplicate", "same_event"
        else:
            conn.execute(LOCK_ORDER, (reference,))
            payment = conn.execute(LOCK_PAYMENT, (reference,)).fetchone()
            if payment is None:
                kind, reason = "unmatched", "no_payment"
            else:
                payment_id, state, expected, order_id = payment
                if state == "confirmed":
                    kind, reason = "acknowledged_duplicate", "already_in_state"
                elif amount != expected:
                    kind, reason = "rejected", "amount_mismatch"
                else:
                    conn.execute(CONFIRM_PAYMENT, (delivery_id, payment_id))
                    conn.execute(SUM_ORDER, (order_id,))
                    kind, reason = "applied", None
        conn.execute(RECORD, (delivery_id, kind, reason, payment_id))
    return {"delivery_id": delivery_id, "kind": kind, "reason": reason, "payment_id": payment_id}


def celery_app() -> Celery:
    """The reference's Celery app: Celery's defaults, plus what an idempotent task wants."""
    app = Celery("reference", broker=os.environ["REFERENCE_BROKER_URL"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    app.task(name=CONFIRM, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)(confirm)
    app.task(name=EMPTY)(empty)
    return app


def empty() -> None:
    """Nothing: the drain rate of this task is what Celery alone costs."""


if __name__ == "__main__":
    celery_app().worker_main(sys.argv[1:])
