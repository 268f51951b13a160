"""Row locks held too long, serialization failures and deadlocks: retried, then applied once."""

from __future__ import annotations

import time

import pytest

from tests.faults.stack import FaultStack, hold_row_lock, succeeded

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_a_payment_locked_longer_than_the_lock_timeout_is_retried_and_applied_once_released(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.wait_ready()  # PAYHOOK_DB_LOCK_TIMEOUT_MS=1000
    payment_id = stack.register_payment(1)
    database = stack.database_url.rsplit("/", 1)[1]
    holder = hold_row_lock(
        stack.postgres.conninfo(database),
        "SELECT state FROM payments WHERE id = %s FOR UPDATE",
        payment_id,
    )
    try:
        (delivery_id,) = stack.deliver([succeeded(1)])
        stack.wait_for(
            "two lock timeouts",
            lambda: stack.log_text("worker").count("transient error, retrying") >= 2,
            timeout=30,
        )
        assert stack.count_outcomes() == 0  # waiting, neither given up nor applied behind the lock
    finally:
        holder.rollback()
        holder.close()

    stack.wait_for_outcomes(1)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 1}
    stack.assert_confirmed_once([payment_id])
    assert "LockNotAvailable" in stack.log_text("worker")
    # Each timeout rolled the whole attempt back: the claim too, so the retry won it again.
    assert stack.query("SELECT first_delivery_id FROM idempotency_keys") == [(delivery_id,)]


INJECT_FAILURES = """
CREATE SEQUENCE fault_attempts;
CREATE FUNCTION fault_inject() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE attempt bigint := nextval('fault_attempts');  -- not rolled back with the attempt
BEGIN
    IF attempt <= 2 THEN
        RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
    ELSIF attempt <= 4 THEN
        RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault_inject BEFORE INSERT ON outcomes FOR EACH ROW EXECUTE FUNCTION fault_inject();
"""


def test_serialization_failures_and_deadlocks_are_retried_until_the_delivery_is_applied(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.wait_ready()
    payment_id = stack.register_payment(1)
    stack.query(INJECT_FAILURES)

    started = time.monotonic()
    (first,) = stack.deliver([succeeded(1)])
    stack.wait_for_outcomes(1)
    (copy,) = stack.deliver([succeeded(1)])
    stack.wait_for_outcomes(2)
    stack.wait_idle()
    assert time.monotonic() - started < 30

    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 1, "acknowledged_duplicate/same_event": 1}
    assert stack.query("SELECT delivery_id, duplicate_of FROM outcomes ORDER BY id") == [
        (first, None),
        (copy, first),
    ]
    stack.assert_confirmed_once([payment_id])
    log = stack.log_text("worker")
    assert log.count("transient error, retrying") == 4
    assert "SerializationFailure" in log
    assert "DeadlockDetected" in log
    assert stack.query("SELECT last_value FROM fault_attempts") == [(6,)]
