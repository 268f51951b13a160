"""Races on real PostgreSQL: a transaction that waited for a delivery's lock must see the outcome
committed meanwhile, or a replay reopens an applied delivery and a second run re-applies it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from celery import Celery

from tasks.shims import PROCESS_DELIVERY
from tests.faults.stack import FaultStack, outcome_lines, succeeded
from worker.taskqueue.app import QUEUE

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

# Long enough for a rival to queue up behind the paused transaction's lock.
PAUSE_S = 4.0


def _waiting_for_a_lock(stack: FaultStack) -> bool:
    rows = stack.query(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(rows[0][0])


def _slow_lock_timeout(stack: FaultStack) -> None:
    # The rival must wait for the lock, not give up after the fault stack's one second.
    stack.env["PAYHOOK_DB_LOCK_TIMEOUT_MS"] = "30000"


def test_a_replay_waiting_for_a_worker_mid_commit_leaves_the_applied_outcome_alone(
    stack: FaultStack,
) -> None:
    _slow_lock_timeout(stack)
    stack.start_receiver()
    stack.start_worker("worker")
    stack.wait_ready()
    payment_id = stack.register_payment(1)
    stack.arm("before_commit", "*", pause_s=PAUSE_S)

    (delivery_id,) = stack.deliver([succeeded(1)])
    stack.paused_pids("before_commit")  # the outcome is written, not committed yet
    with ThreadPoolExecutor(1) as pool:
        replay = pool.submit(
            stack.http.post, f"/api/deliveries/{delivery_id}/replay", timeout=httpx.Timeout(60)
        )
        stack.wait_for("the replay to wait for the lock", lambda: _waiting_for_a_lock(stack))
        answer = replay.result(timeout=60)

    assert answer.status_code == 409, answer.text  # applied: a replay changes nothing
    stack.wait_idle()
    assert stack.query("SELECT count(*) FROM replaced_outcomes") == [(0,)]
    assert stack.query("SELECT delivery_id, kind, duplicate_of FROM outcomes") == [
        (delivery_id, "applied", None)
    ]
    stack.assert_confirmed_once([payment_id])
    assert [d for _, d in stack.runs()] == [delivery_id]  # never run again


def test_two_workers_given_one_delivery_at_once_record_one_outcome_and_log_no_error(
    stack: FaultStack,
) -> None:
    _slow_lock_timeout(stack)
    stack.start_receiver()
    stack.start_worker("first")
    stack.start_worker("second")
    stack.wait_ready()
    payment_id = stack.register_payment(1)
    stack.arm("before_commit", "*", pause_s=PAUSE_S)  # once per delivery: only the first pauses

    (delivery_id,) = stack.deliver([succeeded(1)])
    stack.paused_pids("before_commit")
    # The same delivery again, as a sweeper re-publish or a broker redelivery hands it out.
    Celery(broker=stack.broker_url).send_task(PROCESS_DELIVERY, args=[delivery_id], queue=QUEUE)
    stack.wait_for("the second run to wait for the lock", lambda: _waiting_for_a_lock(stack))
    stack.wait_for("both runs to finish", lambda: _finished_runs(stack) == 2)

    assert stack.query("SELECT kind, reason, duplicate_of FROM outcomes") == [
        ("applied", None, None)
    ]
    assert stack.query("SELECT count(*) FROM outcomes WHERE delivery_id = %s", delivery_id) == [
        (1,)
    ]
    stack.assert_confirmed_once([payment_id])
    for name in ("first", "second"):
        log = stack.log_text(name)
        assert "failed permanently" not in log, log
        assert "ERROR" not in log, log
    results = [line for name in ("first", "second") for line in outcome_lines(stack.log_text(name))]
    assert len(results) == 2 and all("outcome applied" in line for line in results), results


def _finished_runs(stack: FaultStack) -> int:
    return sum(len(outcome_lines(stack.log_text(name))) for name in ("first", "second"))
