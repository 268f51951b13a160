"""RabbitMQ as the broker: a quorum queue with a delivery limit, a dead-letter queue behind it,
countdown retries through native delayed delivery, per-consumer prefetch."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery import Celery

from tasks.shims import PROCESS_DELIVERY
from tests.integration.stack import Stack, rabbitmq_queues, running_stack, scoped
from worker.settings import Settings
from worker.taskqueue.app import DEAD_LETTER, NOTIFY_QUEUE, QUEUE, create_app, task_queue

pytestmark = pytest.mark.integration


def client_settings(stack: Stack, tmp_path: Path) -> Settings:
    return Settings(
        broker_url=stack.env["PAYHOOK_BROKER_URL"],
        database_url=stack.database_url,
        data_dir=tmp_path / "client",
    )


@contextmanager
def stack_without_its_worker(tmp_path: Path, name: str) -> Iterator[Stack]:
    """A stack whose worker declared the queues, then stopped: messages stay where they are."""
    with running_stack(tmp_path, worker_processes=1, name=name, broker="amqp") as stack:
        stack.terminate("worker")
        yield stack


def ready(app: Celery, queue: str) -> int:
    """Messages ready in `queue` now (a passive declare; rabbitmqctl's counts lag behind)."""
    with app.connection_for_write() as connection:
        declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        return int(declared.message_count)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_the_task_queue_is_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_queue(
    tmp_path: Path,
) -> None:
    name = "payhook_it_rabbit_queues"
    with running_stack(tmp_path, worker_processes=2, name=name, broker="amqp"):
        queues = rabbitmq_queues(name)
        consumers = subprocess.run(
            ["rabbitmqctl", "-q", "list_consumers", "-p", scoped(name), "--formatter", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        channels = subprocess.run(
            ["rabbitmqctl", "-q", "list_channels", "vhost", "global_prefetch_count"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    task = queues[QUEUE]
    assert task["type"] == "quorum"
    assert task["arguments"]["x-delivery-limit"] == 10
    assert task["arguments"]["x-dead-letter-exchange"] == DEAD_LETTER
    assert queues[DEAD_LETTER]["type"] == "quorum"
    # The relay's queue is of the same kind, and the default worker consumes it too.
    notify = queues[NOTIFY_QUEUE]
    assert notify["type"] == "quorum"
    assert notify["arguments"]["x-dead-letter-exchange"] == DEAD_LETTER
    assert [c["queue_name"] for c in json.loads(consumers)].count(NOTIFY_QUEUE) == 1
    # Native delayed delivery: 28 levels of quorum queues, declared by the worker.
    delayed = [q for q in queues if q.startswith("celery_delayed_")]
    assert len(delayed) == 28
    assert {queues[q]["type"] for q in delayed} == {"quorum"}
    # Prefetch is per consumer (quorum queues refuse global QoS): one per worker process.
    [consumer] = [c for c in json.loads(consumers) if c["queue_name"] == QUEUE]
    assert consumer["prefetch_count"] == 2
    assert consumer["ack_required"] is True
    ours = [
        line.split("\t") for line in channels.splitlines() if line.startswith(scoped(name) + "\t")
    ]
    assert ours
    assert {global_prefetch for _, global_prefetch in ours} == {"0"}


def test_a_countdown_waits_in_rabbitmq_not_in_the_worker(tmp_path: Path) -> None:
    with stack_without_its_worker(tmp_path, "payhook_it_rabbit_delay") as stack:
        app = create_app(client_settings(stack, tmp_path))
        started = time.monotonic()
        app.send_task(PROCESS_DELIVERY, args=[1], countdown=8)  # 8 s: level 3 of the delays
        assert ready(app, "celery_delayed_3") == 1
        assert ready(app, QUEUE) == 0

        assert wait_until(lambda: ready(app, QUEUE) == 1, timeout=20)
        assert time.monotonic() - started >= 7.5
        assert ready(app, "celery_delayed_3") == 0


def test_a_message_delivered_past_the_limit_goes_to_the_dead_letter_queue(tmp_path: Path) -> None:
    with stack_without_its_worker(tmp_path, "payhook_it_rabbit_dead") as stack:
        settings = client_settings(stack, tmp_path)
        app = create_app(settings)
        app.send_task(PROCESS_DELIVERY, args=[1])
        deliveries = 0
        with app.connection_for_write() as connection:
            queue = task_queue(settings)(connection.default_channel)
            for _ in range(50):  # bounded: the limit is 10
                message = queue.get(no_ack=False)
                if message is None:
                    break
                deliveries += 1
                message.requeue()  # what a worker killed mid-task amounts to
        assert deliveries == 11  # the first delivery and ten more
        assert wait_until(lambda: ready(app, DEAD_LETTER) == 1, timeout=10)
        assert ready(app, QUEUE) == 0
