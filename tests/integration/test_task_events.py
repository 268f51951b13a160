"""Task events, on Redis and a real prefork worker: on from the start (Flower needs them), and
switched off and on again from outside with Celery's `disable_events` and `enable_events`, as
an operator sheds their load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.integration.stack import Stack, running_stack
from tests.integration.test_flower import post_stripe, register, stripe_confirmation

pytestmark = pytest.mark.integration

NAME = "payhook_it_events"


class EventTap:
    """Every event published on the broker's event exchange, collected by a thread."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery(broker=broker_url)
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connection = self.app.connection_for_read()
        self._receiver = self.app.events.Receiver(self._connection, handlers={"*": self._seen})
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _seen(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)

    def _capture(self) -> None:
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def types(self) -> list[str]:
        with self._lock:
            return [str(event["type"]) for event in self._events]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def wait_for(self, kind: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.types():
            assert time.monotonic() < deadline, f"no {kind} event in {timeout} s: {self.types()}"
            time.sleep(0.1)

    @contextmanager
    def running(self) -> Iterator[EventTap]:
        self._thread.start()
        try:
            yield self
        finally:
            self._receiver.should_stop = True
            self._thread.join(timeout=5)
            self._connection.release()


def _switch(app: Celery, command: str) -> None:
    """Send `command` to the stack's one worker and check that it answered."""
    nodes = [node for reply in app.control.ping(timeout=5) for node in reply]
    node = next(node for node in nodes if node.startswith(f"{NAME}@"))
    replies = getattr(app.control, command)(destination=[node], reply=True, timeout=5)
    assert replies, f"{node} did not answer {command}"


def _delivered(stack: Stack, body: bytes, outcomes: int) -> None:
    """Post the signed body and wait until the stack has `outcomes` outcomes in all."""
    assert post_stripe(stack, body) == 202
    stack.wait_for_outcomes(outcomes, timeout=60)


def test_task_events_switch_off_and_on_from_outside(tmp_path: Path) -> None:
    with (
        running_stack(tmp_path, worker_processes=1, name=NAME) as stack,
        EventTap(stack.env["PAYHOOK_BROKER_URL"]).running() as tap,
    ):
        tap.wait_for("worker-heartbeat")  # the tap listens, and the worker's events flow
        register(stack, "order-ev-1", "stripe", "pi_ev_1", 2000, "usd")
        confirmation = stripe_confirmation("evt_ev_1", "pi_ev_1")

        _delivered(stack, confirmation, 1)
        tap.wait_for("task-succeeded")  # on from the start

        _switch(tap.app, "disable_events")
        tap.clear()
        _delivered(stack, confirmation, 2)
        time.sleep(1.5)  # task events are flushed within the worker's next loop iteration
        assert not [kind for kind in tap.types() if kind.startswith("task-")]
        tap.clear()
        tap.wait_for("worker-heartbeat")  # the worker itself still shows up (Flower: online)

        _switch(tap.app, "enable_events")
        tap.clear()
        _delivered(stack, confirmation, 3)
        tap.wait_for("task-succeeded")
