"""Worker processes killed: a child mid-task, a whole worker, a poison delivery, a SIGTERM.

Each on Redis and on RabbitMQ: what comes back to the queue, and when, is the broker's doing.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.stack import FaultStack, on_both_brokers, outcome_lines, succeeded
from tests.integration.stack import Broker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120), on_both_brokers]


@pytest.mark.parametrize("moment", ["started", "before_commit", "after_commit"])
def test_a_child_killed_mid_task_leaves_its_delivery_redelivered_and_applied_once(
    stack: FaultStack, moment: str
) -> None:
    stack.start_receiver()
    stack.start_worker("worker")
    stack.wait_ready()
    payment_id = stack.register_payment(1)
    stack.arm(moment, "*")

    (delivery_id,) = stack.deliver([succeeded(1)])
    (pid,) = stack.paused_pids(moment).values()
    committed = stack.query("SELECT kind FROM outcomes WHERE delivery_id = %s", delivery_id)
    assert committed == ([("applied",)] if moment == "after_commit" else [])
    os.kill(pid, signal.SIGKILL)

    stack.wait_for_outcomes(1)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 1}
    # Counted as a lost attempt only when the attempt had started (it is marked so in the
    # database before it locks the delivery) and had not finished.
    counted = 1 if moment == "before_commit" else 0
    assert stack.query("SELECT redeliveries FROM deliveries") == [(counted,)]
    stack.assert_confirmed_once([payment_id])
    log = stack.log_text("worker")
    assert "WorkerLostError" in log
    # The message, and the same message again.
    assert [delivery for _, delivery in stack.runs()] == [delivery_id, delivery_id]
    # The redelivery answered with the outcome recorded before the kill, or recorded it.
    results = outcome_lines(log)
    assert len(results) == (2 if moment == "after_commit" else 1)
    assert all("outcome applied" in line for line in results)


def test_a_worker_killed_with_tasks_reserved_hands_them_to_another_worker(
    stack: FaultStack, broker: Broker
) -> None:
    stack.start_receiver()
    stack.start_worker("first", concurrency=2)
    stack.wait_ready()
    payment_ids = stack.register_payments(4)
    stack.arm("started", "*")

    delivery_ids = stack.deliver([succeeded(n) for n in range(4)])
    held = stack.paused_pids("started", count=2)  # both children busy, two messages reserved
    if broker == "redis":
        # On Redis a worker holds messages beyond the ones it runs (REDIS_PREFETCH), fetched
        # one at a time after the first two: wait until it holds all four (on a busy machine the
        # last can still be waiting when both children have paused).
        stack.wait_for(
            "all four messages handed out to the first worker",
            lambda: stack.broker_messages() == (0, 4),
            timeout=10,
        )
    held_at = time.monotonic()
    stack.kill("first")  # the main process and its children, all at once
    assert stack.count_outcomes() == 0

    stack.disarm("started")
    if broker == "redis":
        # The two messages the first worker held stay handed out to it until their visibility
        # timeout is over: a worker looks for such messages as it starts, and then only every
        # 100 s (kombu's unacked_restore_interval times unacked_restore_throttle), so start it
        # after the timeout. (In production the sweeper re-publishes such deliveries after
        # PAYHOOK_SWEEP_AFTER_S.) All four are handed out to the dead worker, two never started.
        assert stack.broker_messages() == (0, 4)
        visibility_s = int(stack.env["PAYHOOK_VISIBILITY_TIMEOUT_S"])
        time.sleep(visibility_s + 1 - (time.monotonic() - held_at))
    else:
        # RabbitMQ puts them back in the queue as soon as the dead worker's connection closes.
        stack.wait_for(
            "the held messages back in the queue",
            lambda: stack.broker_messages() == (4, 0),
            timeout=10,
        )
    stack.start_worker("second", concurrency=2)
    stack.wait_for_outcomes(4, timeout=60)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 4}
    stack.assert_confirmed_once(payment_ids)
    # Killed in task_prerun, before their attempts were marked started: none counts as lost.
    assert stack.query("SELECT sum(redeliveries) FROM deliveries") == [(0,)]
    assert set(held) < set(delivery_ids)


def test_a_poison_delivery_is_recorded_dead_after_its_redeliveries_and_replays_once_fixed(
    stack: FaultStack, broker: Broker
) -> None:
    stack.start_receiver()
    stack.wait_ready()
    poisoned_payment, healthy_payment = stack.register_payments(2)
    poison, healthy = stack.deliver([succeeded(0), succeeded(1)])
    stack.arm("crash", poison)  # its worker process dies each time it processes this delivery
    stack.start_worker("worker")

    stack.wait_for_outcomes(2, timeout=90)
    stack.wait_idle()
    crashes = stack.crashes(poison)
    assert crashes == 1 + 5  # the first try and PAYHOOK_MAX_SWEEPS lost attempts more
    time.sleep(1.5)
    assert stack.crashes(poison) == crashes  # no endless loop
    assert stack.query("SELECT delivery_id, kind, reason FROM outcomes ORDER BY delivery_id") == [
        (poison, "dead", "worker_lost"),
        (healthy, "applied", None),  # the poison held up nothing else
    ]
    stack.assert_confirmed_once([healthy_payment])
    if broker == "amqp":
        # Payhook's budget ran out before RabbitMQ's delivery limit (PAYHOOK_DELIVERY_LIMIT):
        # the message was acknowledged with the outcome, not dead-lettered.
        assert stack.dead_lettered() == 0

    # An operator sees it, removes the cause and replays it.
    listed = stack.http.get("/api/deliveries", params={"outcome": "dead"}).json()
    assert [d["id"] for d in listed["deliveries"]] == [poison]
    stack.disarm("crash")
    replay = stack.http.post(f"/api/deliveries/{poison}/replay")
    assert replay.status_code == 202, replay.text
    stack.wait_for(
        "the replayed delivery to be applied",
        lambda: (stack.outcome_of(poison) or {}).get("kind") == "applied",
    )
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    stack.assert_confirmed_once([poisoned_payment, healthy_payment])
    assert stack.query("SELECT kind, reason FROM replaced_outcomes") == [("dead", "worker_lost")]
    assert stack.crashes(poison) == crashes


def test_sigterm_during_work_stops_the_worker_gracefully_and_loses_nothing(
    stack: FaultStack,
) -> None:
    stack.start_receiver()
    stack.start_worker("first", concurrency=2)
    stack.wait_ready()
    payment_ids = stack.register_payments(10)
    stack.arm("started", "*", pause_s=2)  # each task takes two seconds

    stack.deliver([succeeded(n) for n in range(10)])
    busy = stack.paused_pids("started", count=2)
    started = time.monotonic()
    assert stack.terminate("first") == 0
    assert time.monotonic() - started < 10
    # The two tasks in progress were finished, not abandoned.
    finished = {d for (d,) in stack.query("SELECT delivery_id FROM outcomes")}
    assert set(busy) <= finished
    assert len(finished) < 10

    stack.disarm("started")
    stack.start_worker("second", concurrency=2)
    stack.wait_for_outcomes(10, timeout=60)
    stack.wait_idle()
    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": 10}
    stack.assert_confirmed_once(payment_ids)
    assert stack.query("SELECT sum(redeliveries) FROM deliveries") == [(0,)]
    assert "Warm shutdown" in stack.log_text("first")
