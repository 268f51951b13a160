"""A backlog is not a loss: deliveries queued behind a burst for longer than the whole sweep
budget are each applied once, and none is recorded dead or published again needlessly."""

from __future__ import annotations

import pytest

from tests.faults.stack import FaultStack, on_both_brokers, succeeded

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240), on_both_brokers]

BURST = 200


def test_a_burst_queued_longer_than_the_sweep_budget_is_applied_once_and_never_dead(
    stack: FaultStack,
) -> None:
    # PAYHOOK_SWEEP_AFTER_S=2 and a budget of PAYHOOK_MAX_SWEEPS=5: the last delivery of the
    # burst waits in the queue far longer than 5 x 2 s behind one worker process.
    stack.start_receiver()
    stack.start_beat()
    stack.wait_ready()
    payment_ids = stack.register_payments(BURST, parallel=4)
    stack.arm("before_commit", "*", pause_s=0.1)  # every task takes a tenth of a second at least

    stack.deliver([succeeded(n) for n in range(BURST)], parallel=8)
    stack.start_worker("worker")
    stack.wait_for_outcomes(BURST, timeout=200)
    stack.wait_idle()

    stack.assert_every_delivery_has_one_outcome()
    assert stack.outcome_counts() == {"applied": BURST}
    stack.assert_confirmed_once(payment_ids)
    # Nothing was lost, so nothing needed publishing again, and no attempt was lost.
    assert stack.query("SELECT sum(sweeps), sum(redeliveries) FROM deliveries") == [(0, 0)]
    assert len(stack.runs()) == BURST
