"""Clean restarts are not crashes: only an attempt that started and never finished counts
against a delivery's budget of lost attempts (PAYHOOK_MAX_SWEEPS)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from tests.faults.stack import FaultStack, succeeded
from worker.tooling.processes import children

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

RESTARTS = 6  # more than the budget of lost attempts (5)


def test_warm_restarts_while_a_delivery_waits_never_record_it_worker_lost(
    stack: FaultStack,
) -> None:
    # The delivery waits in the database for its payment; beat wakes it every second or two, so
    # each worker meets it again, and each stops (SIGTERM, a warm shutdown) right after an
    # attempt, with the next wake's message perhaps already queued or handed back.
    stack.env["PAYHOOK_DEFERRAL_CAP_S"] = "2"
    stack.env["PAYHOOK_WAKE_INTERVAL_S"] = "1"
    stack.start_receiver()
    stack.start_beat()
    stack.wait_ready()
    (delivery_id,) = stack.deliver([succeeded(1)])  # its payment is not registered yet

    for restart in range(RESTARTS):
        stack.start_worker("worker")
        stack.wait_for(
            f"attempt {restart + 1} to be deferred",
            lambda want=restart + 1: (
                stack.query("SELECT attempts FROM deliveries WHERE id = %s", delivery_id)
                >= [(want,)]
            ),
        )
        assert stack.terminate("worker") == 0
        assert "Warm shutdown" in stack.log_text("worker")

    assert stack.outcome_of(delivery_id) is None  # still waiting for its payment, not dead
    assert stack.query("SELECT redeliveries FROM deliveries") == [(0,)]

    payment_id = stack.register_payment(1)
    stack.start_worker("worker")
    replay = stack.http.post(f"/api/deliveries/{delivery_id}/replay")
    assert replay.status_code == 202, replay.text
    stack.wait_for_outcomes(1)
    assert stack.outcome_counts() == {"applied": 1}
    stack.assert_confirmed_once([payment_id])


def test_a_warm_shutdown_racing_a_task_handed_to_an_idle_child_ends_in_seconds(
    stack: FaultStack,
) -> None:
    # The race, made certain: the worker writes a task into the pipe of its idle child, and
    # the SIGTERM comes before the child has taken it (the child is stopped, then let go). The
    # worker gives the message back; the child runs the task anyway, and its result is never
    # read. Unbounded, the child then waits 30 s for that read before it exits, and the worker
    # with it.
    stack.start_receiver()
    worker = stack.start_worker("worker")
    stack.wait_ready()
    payment_id = stack.register_payment(1)
    (child,) = children(worker.pid)
    os.kill(child, signal.SIGSTOP)
    resume = threading.Timer(1.0, os.kill, (child, signal.SIGCONT))
    try:
        (delivery_id,) = stack.deliver([succeeded(1)])
        stack.wait_for("the worker to take the message", lambda: stack.broker_messages() == (0, 1))
        time.sleep(0.5)  # and to write it to its child, at once: the child is idle
        resume.start()
        started = time.monotonic()
        assert stack.terminate("worker") == 0
        took = time.monotonic() - started
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # gone with its worker, as it should be
            os.kill(child, signal.SIGCONT)
    assert took < 10, f"the warm shutdown took {took:.1f} s"
    assert "Restoring 1 unacknowledged message(s)" in stack.log_text("worker")

    # The child's run applied the payment; the message given back finds it applied.
    stack.start_worker("second")
    stack.wait_for_outcomes(1)
    stack.wait_idle()
    assert stack.outcome_counts() == {"applied": 1}
    assert stack.query("SELECT redeliveries FROM deliveries WHERE id = %s", delivery_id) == [(0,)]
    stack.assert_confirmed_once([payment_id])
