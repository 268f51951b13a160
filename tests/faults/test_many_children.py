"""Many tasks over several prefork children: every delivery recorded, no protocol errors."""

from __future__ import annotations

import re

import pytest

from tests.faults.stack import FaultStack, charge_succeeded, on_both_brokers, succeeded

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180), on_both_brokers]

# What a worker logs when its pool or its broker connection goes wrong.
TROUBLE = re.compile(
    r"Protocol error|UnpicklingError|Unrecoverable error|WorkerLostError|exited prematurely"
    r"|Received and deleted unknown message|Connection to broker lost|Traceback|\[error|CRITICAL",
    re.IGNORECASE,
)


def test_three_hundred_deliveries_over_four_children_are_each_recorded_once(
    stack: FaultStack,
) -> None:
    stack.env["PAYHOOK_DB_LOCK_TIMEOUT_MS"] = "5000"  # the default: contention, not a fault
    stack.start_receiver()
    stack.start_worker("worker", concurrency=4)
    stack.wait_ready()
    payment_ids = stack.register_payments(100, parallel=8)

    # Per payment: its event twice (the provider retried) and the charge's own event.
    bodies = [
        body for n in range(100) for body in (succeeded(n), succeeded(n), charge_succeeded(n))
    ]
    delivery_ids = stack.deliver(bodies, parallel=16)
    stack.wait_for_outcomes(300, timeout=120)
    stack.wait_idle()

    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {
        "applied": 100,
        "acknowledged_duplicate/same_event": 100,
        "acknowledged_duplicate/already_in_state": 100,
    }
    stack.assert_confirmed_once(payment_ids)
    assert stack.query("SELECT sum(redeliveries) FROM deliveries") == [(0,)]
    log = stack.log_text("worker")
    assert TROUBLE.findall(log) == []
    runs = stack.runs()
    assert {delivery for _, delivery in runs} == set(delivery_ids)
    assert len({pid for pid, _ in runs}) == 4  # spread over the four children
