"""The Celery app, configured for at-least-once delivery of idempotent tasks."""

from __future__ import annotations

from typing import Any

import billiard.pool
from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue

import tasks.shims  # noqa: F401  (registers the payhook.* tasks)
from tasks.shims import PRUNE_BODIES, RELAY, SWEEP, WAKE, forget_runtime
from worker.settings import Settings

QUEUE = "payhook"
# The sweeper's own queue: a sweep never waits behind a backlog of deliveries, and one that
# could not run within its interval expires instead of piling up behind the next.
SWEEP_QUEUE = "payhook.sweep"
# The relay's own queue: a deployment may give it workers of its own (`-Q payhook.notify`);
# the default worker consumes both.
NOTIFY_QUEUE = "payhook.notify"
# RabbitMQ: where a task message goes once it was delivered more than PAYHOOK_DELIVERY_LIMIT
# times. Nothing consumes it: payhook has recorded such a delivery dead long before (its own
# redelivery budget is smaller), so this queue is an operator's evidence, kept bounded.
DEAD_LETTER = "payhook.dead"
DEAD_LETTER_MAX_LENGTH = 100_000
# Task messages a worker holds per process of its pool, the one it runs included (Celery's
# prefetch multiplier; acks late, so a running task's message is held too). On Redis, four: a
# child that finishes finds its next task already in the worker instead of waiting for a fetch
# from Redis (a backlog drains 10-25 % faster, `payhook bench`). What a worker holds and has not
# started is given back by a warm shutdown, and re-published by the sweeper after a kill, like
# the one it runs. On RabbitMQ, one: a message handed out again counts towards
# x-delivery-limit, and a killed worker must not bring its held messages nearer their dead
# letter.
REDIS_PREFETCH = 4
# How long a prefork child that exits waits for the worker to read the results it sent, in
# tenths of a second (billiard waits 300: 30 s). See `_bound_child_exit_wait`.
CHILD_EXIT_WAIT_POLLS = 30


def create_app(settings: Settings) -> Celery:
    app = Celery("payhook", broker=settings.broker, set_as_current=True)
    policy = settings.retry_policy()
    app.conf.update(
        task_acks_late=True,  # our tasks are idempotent by construction
        task_reject_on_worker_lost=True,  # a killed child's task goes back to the queue
        worker_prefetch_multiplier=1 if settings.uses_amqp else REDIS_PREFETCH,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # outcomes live in PostgreSQL; Flower reads results from events
        worker_send_task_events=True,
        # No task-sent events: they would double the receiver's publishes, and Flower learns of
        # every task from the worker's received/started/succeeded events anyway.
        task_send_sent_event=False,
        task_time_limit=policy.time_limit_s,
        task_soft_time_limit=policy.soft_time_limit_s,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        # A publish that fails fast leaves the delivery to the sweeper instead of a stuck request.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        task_routes={
            SWEEP: {"queue": SWEEP_QUEUE},
            WAKE: {"queue": SWEEP_QUEUE},
            RELAY: {"queue": NOTIFY_QUEUE},
        },
        beat_schedule=_beat_schedule(settings),
        worker_hijack_root_logger=False,
    )
    app.steps["consumer"].add(NamedEventGroups)
    if settings.uses_amqp:
        app.conf.update(_rabbitmq_options(settings))
        app.steps["consumer"].add(DeclareDeadLetterQueue)
    else:
        app.conf.task_queues = [
            *(
                Queue(name, Exchange(name, type="direct"), routing_key=name)
                for name in (QUEUE, NOTIFY_QUEUE)
            ),
            sweep_queue(),
        ]
    return app


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "sweep": {
            "task": SWEEP,
            "schedule": float(settings.sweep_interval_s),
            "options": {"queue": SWEEP_QUEUE, "expires": float(settings.sweep_interval_s)},
        },
        # Due deferred deliveries, published on the same maintenance queue, never piling up.
        "wake": {
            "task": WAKE,
            "schedule": float(settings.wake_interval_s),
            "options": {"queue": SWEEP_QUEUE, "expires": float(settings.wake_interval_s)},
        },
        "prune-bodies": {"task": PRUNE_BODIES, "schedule": 3600.0},
    }
    if settings.notify_endpoints():
        # Retries after backoff, and anything whose after-commit relay publish was lost.
        schedule["relay"] = {"task": RELAY, "schedule": float(settings.notify_interval_s)}
    return schedule


def task_queue(settings: Settings, name: str = QUEUE) -> Queue:
    """A RabbitMQ task queue: quorum (replicated, durable), with a delivery limit.

    A topic exchange, because Celery sends countdown retries to quorum queues through
    RabbitMQ's native delayed delivery, which cannot route to a direct exchange (the worker
    would instead hold the message in memory until its ETA).
    """
    return Queue(
        name,
        Exchange(name, type="topic", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER,
            # Keep a message until payhook.dead has it; needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def sweep_queue() -> Queue:
    """A durable queue of its own for the sweeper's task (a classic queue on RabbitMQ)."""
    return Queue(
        SWEEP_QUEUE,
        Exchange(SWEEP_QUEUE, type="direct", durable=True),
        routing_key=SWEEP_QUEUE,
        durable=True,
    )


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTER,
        Exchange(DEAD_LETTER, type="fanout", durable=True),
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-max-length": DEAD_LETTER_MAX_LENGTH,
            "x-overflow": "drop-head",
        },
    )


def _rabbitmq_options(settings: Settings) -> dict[str, Any]:
    # With a quorum queue declared, Celery turns global QoS off (quorum queues refuse it), so
    # the prefetch of one is per consumer, and sends countdown retries through the
    # celery_delayed_* queues (quorum too) instead of holding them in the worker.
    return {
        "task_queues": [
            task_queue(settings),
            task_queue(settings, NOTIFY_QUEUE),
            sweep_queue(),
        ],
        "task_default_exchange": QUEUE,
        "task_default_exchange_type": "topic",
        "task_default_routing_key": QUEUE,
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
    }


class NamedEventGroups(bootsteps.StartStopStep):
    """Let `celery control disable_events` (and `enable_events`) switch this worker's task
    events, as they do on a worker started without them.

    A worker started with task events on gets an event dispatcher with no groups, which sends
    every group; `disable_events` only takes "task" out of the groups, so it changed nothing,
    and the worker kept publishing three task events per delivery. Naming both groups the
    worker sends makes the switch work; what it was set to outlives a reconnection (Celery's
    Events step hands the groups to the next dispatcher).
    """

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, parent: Any) -> None:
        dispatcher = parent.event_dispatcher
        if dispatcher is not None and not dispatcher.groups:
            dispatcher.groups = {"worker", "task"}


class DeclareDeadLetterQueue(bootsteps.StartStopStep):
    """Declare payhook.dead when the worker connects: at-least-once dead-lettering holds a
    message in the task queue for as long as its dead-letter exchange routes nowhere."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        with parent.app.connection_for_write() as connection:
            dead_letter_queue()(connection.default_channel).declare()


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_redis:
        return {
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
        }
    if settings.broker.startswith("filesystem"):
        folder = settings.broker_folder
        folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            # Kombu's default control folder is relative to the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    if settings.uses_amqp:
        # Publisher confirms: a publish returns once RabbitMQ has the message (for a quorum
        # queue: on a majority of its replicas), and raises if RabbitMQ refused it.
        return {"confirm_publish": True}
    return {}


@worker_init.connect
def _bound_child_exit_wait(**_: Any) -> None:
    # A warm shutdown can race a task the worker has just written to an idle child's pipe: Celery
    # drops the task from its books as "not yet accepted, the broker will give it back" (it
    # does: the message is not acknowledged), but the child reads it and runs it all the same.
    # No one reads that task's result any more, and the child, before exiting, waits for it to
    # be read: 30 s, with the whole worker waiting on the child. Three seconds is six times
    # what the shutdown takes to read a result it does expect (it polls every 0.5 s). Set in the
    # worker's main process before its pool forks, so every child inherits it.
    billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = CHILD_EXIT_WAIT_POLLS


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Each prefork child builds its own engine and pool: no connection crosses a fork.
    forget_runtime()
