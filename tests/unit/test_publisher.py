"""The receiver's publisher on PostgreSQL: from the event loop while the broker answers; through
a request thread, with retries, for a while after it did not."""

from __future__ import annotations

import asyncio
import threading

import pytest

from worker.web import publisher as publisher_module
from worker.web.publisher import INLINE_PAUSE_S, Publisher


class Broker:
    """Records every publish attempt and the thread it came from; refuses while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.once: list[tuple[int, str]] = []
        self.retried: list[tuple[int, str]] = []

    def publish_once(self, delivery_id: int) -> None:
        self.once.append((delivery_id, threading.current_thread().name))
        if self.down:
            raise ConnectionRefusedError("broker down")

    def try_publish(self, delivery_id: int) -> None:
        self.retried.append((delivery_id, threading.current_thread().name))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(publisher_module.time, "monotonic", lambda: now[0])
    return now


def test_a_healthy_broker_is_published_to_from_the_event_loop_in_order(clock: list[float]) -> None:
    broker = Broker()
    publisher = Publisher(broker.publish_once, broker.try_publish, inline=True)

    loop_thread = asyncio.run(_publish(publisher, [1, 2, 3]))

    assert broker.once == [(1, loop_thread), (2, loop_thread), (3, loop_thread)]
    assert broker.retried == []


def test_a_failed_publish_and_the_rest_go_through_a_thread_with_retries_for_a_while(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    publisher = Publisher(broker.publish_once, broker.try_publish, inline=True)
    broker.down = True

    loop_thread = asyncio.run(_publish(publisher, [1, 2]))

    assert broker.once == [(1, loop_thread)]  # tried once from the loop, then not again
    assert [d for d, _ in broker.retried] == [1, 2]
    assert all(thread != loop_thread for _, thread in broker.retried)
    assert "publishing from threads, with retries, for 30 s" in caplog.text

    broker.down = False
    clock[0] += INLINE_PAUSE_S - 1
    asyncio.run(_publish(publisher, [3]))
    assert [d for d, _ in broker.once] == [1]  # still paused: through the thread
    assert [d for d, _ in broker.retried] == [1, 2, 3]

    clock[0] += 2
    asyncio.run(_publish(publisher, [4]))
    assert [d for d, _ in broker.once] == [1, 4]  # the pause is over: from the loop again
    assert [d for d, _ in broker.retried] == [1, 2, 3]


def test_another_broker_is_always_published_to_from_a_thread(clock: list[float]) -> None:
    broker = Broker()
    publisher = Publisher(broker.publish_once, broker.try_publish, inline=False)

    loop_thread = asyncio.run(_publish(publisher, [1, 2]))

    assert broker.once == []
    assert [d for d, _ in broker.retried] == [1, 2]
    assert all(thread != loop_thread for _, thread in broker.retried)


async def _publish(publisher: Publisher, delivery_ids: list[int]) -> str:
    await publisher.publish(delivery_ids)
    return threading.current_thread().name
