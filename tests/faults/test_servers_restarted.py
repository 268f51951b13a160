"""The broker and PostgreSQL stopped and restarted under a running payhook.

Redis only, but for the broker being down: RabbitMQ keeps its queues over a restart, and the
shared test RabbitMQ is not to be stopped, but a stack's vhost can refuse its connections.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.faults.stack import FaultStack, charge_succeeded, intent, on_both_brokers, succeeded
from worker.taskqueue.app import QUEUE

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_deliveries_queued_when_redis_restarts_empty_are_published_again_by_the_sweeper(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_beat()
    stack.wait_ready()  # no worker yet: the deliveries wait in Redis
    payment_ids = stack.register_payments(5)
    stack.deliver([succeeded(n) for n in range(5)] + [charge_succeeded(n) for n in range(5)])
    assert redis.Redis(port=stack.redis.port).llen(QUEUE) >= 10

    stack.redis.restart()  # no persistence: the queue is gone
    assert redis.Redis(port=stack.redis.port).llen(QUEUE) == 0

    stack.start_worker("worker", concurrency=2)
    stack.wait_for_outcomes(10, timeout=60)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 5, "acknowledged_duplicate/already_in_state": 5}
    stack.assert_confirmed_once(payment_ids)
    assert stack.query("SELECT min(sweeps) FROM deliveries")[0][0] >= 1
    assert "sweeper re-published" in stack.log_text("worker")


@on_both_brokers
def test_webhooks_arriving_while_the_broker_is_down_are_stored_answered_and_processed_later(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.start_beat()
    stack.wait_ready()
    payment_ids = stack.register_payments(3)

    stack.stop_broker()
    answers = []
    for body in [succeeded(n) for n in range(3)] + [succeeded(n) for n in range(3)]:
        started = time.monotonic()
        answer = stack.post_stripe(body)
        answers.append((answer.status_code, time.monotonic() - started))
    assert [status for status, _ in answers] == [202] * 6
    assert max(seconds for _, seconds in answers) < 3, answers  # quickly, not after timeouts
    assert stack.count_outcomes() == 0
    assert stack.query("SELECT count(*) FROM deliveries") == [(6,)]
    assert "publish failed, the sweeper will re-publish" in stack.log_text("receiver")

    stack.start_broker()  # Redis: empty, on the same port
    stack.wait_for_outcomes(6, timeout=90)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 3, "acknowledged_duplicate/same_event": 3}
    stack.assert_confirmed_once(payment_ids)
    assert stack.query("SELECT min(sweeps) FROM deliveries")[0][0] >= 1  # the sweeper's doing


def test_webhooks_arriving_while_postgresql_is_down_get_503_and_nothing_is_stored(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.wait_ready()
    payment_id = stack.register_payment(1)

    stack.postgres.stop()
    try:
        refused = []
        for _ in range(3):
            started = time.monotonic()
            answer = stack.post_stripe(succeeded(1))
            refused.append(answer)
            assert time.monotonic() - started < 5
    finally:
        stack.postgres.start()
    for answer in refused:
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) > 0
        assert list(answer.json()) == ["error"]
    assert stack.query("SELECT count(*) FROM deliveries") == [(0,)]

    # The provider retries later, and this time the delivery is stored and applied.
    (delivery_id,) = stack.deliver([succeeded(1)])
    stack.wait_for_outcomes(1)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 1}
    stack.assert_confirmed_once([payment_id])
    assert stack.query("SELECT id FROM deliveries") == [(delivery_id,)]
    assert "unknown_delivery" not in stack.log_text("worker")  # no task without its row


def test_postgresql_restarted_mid_processing_leaves_tasks_to_retry_and_finish(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker", concurrency=2)
    stack.wait_ready()
    payment_ids = stack.register_payments(10)
    # Slow the work down so that the restart finds transactions open and tasks waiting.
    stack.arm("started", "*", pause_s=0.3)
    stack.arm("before_commit", "*", pause_s=0.3)

    stack.deliver([succeeded(n) for n in range(10)] + [charge_succeeded(n) for n in range(10)])
    stack.paused_pids("before_commit", count=1)
    stack.postgres.stop("fast")  # every session is terminated, open transactions roll back
    time.sleep(2)
    stack.postgres.start()

    stack.wait_for_outcomes(20, timeout=90)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 10, "acknowledged_duplicate/already_in_state": 10}
    stack.assert_confirmed_once(payment_ids)
    log = stack.log_text("worker")
    assert "transient error, retrying" in log
    assert "failed permanently" not in log


def test_a_delivery_waiting_for_its_payment_waits_in_the_database_through_a_redis_restart(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.start_beat()
    stack.wait_ready()
    (delivery_id,) = stack.deliver([succeeded(0)])  # its payment is not registered yet
    stack.wait_for(
        "the delivery to wait",
        lambda: stack.query("SELECT status FROM deliveries") == [("deferred",)],
    )
    stack.wait_idle()  # it waits in PostgreSQL: no countdown, no message in the broker

    stack.redis.restart()  # no persistence: whatever Redis held is gone
    # Registered behind the API's back, so that nothing wakes the delivery at once: the beat's
    # wake task finds it at its next attempt.
    stack.query(
        "INSERT INTO orders (reference, total, currency, paid_amount, refunded_amount,"
        " created_at) VALUES ('order-0', 2000, 'USD', 0, 0, now())"
    )
    (payment_id,) = stack.query(
        "INSERT INTO payments (order_id, provider, provider_reference, amount, currency, state,"
        " refunded_amount, created_at, updated_at) SELECT id, 'stripe', %s, 2000, 'USD',"
        " 'pending', 0, now(), now() FROM orders WHERE reference = 'order-0' RETURNING id",
        intent(0),
    )[0]

    stack.wait_for_outcomes(1, timeout=60)
    stack.wait_idle()
    assert stack.outcome_of(delivery_id) is not None
    assert stack.outcome_counts() == {"applied": 1}
    stack.assert_confirmed_once([payment_id])
    assert "woke 1 deferred deliveries" in stack.log_text("worker")
