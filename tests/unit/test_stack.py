"""The harness every real-process test starts its processes with (worker/tooling/stack.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from worker.tooling.stack import Stack, StackError

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
print("up", flush=True)
time.sleep(60)
"""


def test_a_process_that_will_not_stop_is_killed_and_its_log_end_shown(tmp_path: Path) -> None:
    stack = Stack({}, tmp_path)
    process = stack.start("stubborn", [sys.executable, "-c", STUBBORN])
    stack.wait_for("the process to start", lambda: "up" in stack.log_text("stubborn"), 10)

    with pytest.raises(StackError) as raised:
        stack.terminate("stubborn", timeout=1)

    message = str(raised.value)
    assert message.startswith("stubborn did not stop within 1 s of SIGTERM")
    assert str(tmp_path / "stubborn.log") in message
    assert message.splitlines()[-2:] == ["up", "SIGTERM ignored"]
    assert process.poll() is not None  # killed, not left behind
