"""The Celery app, configured for at-least-once delivery of idempotent tasks."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

import tasks.shims  # noqa: F401  (registers the payhook.* tasks)
from tasks.shims import PRUNE_BODIES, SWEEP, forget_runtime
from worker.settings import Settings

QUEUE = "payhook"


def create_app(settings: Settings) -> Celery:
    app = Celery("payhook", broker=settings.broker, set_as_current=True)
    policy = settings.retry_policy()
    app.conf.update(
        task_acks_late=True,  # our tasks are idempotent by construction
        task_reject_on_worker_lost=True,  # a killed child's task goes back to the queue
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # outcomes live in PostgreSQL; Flower reads results from events
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
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
        beat_schedule={
            "sweep": {"task": SWEEP, "schedule": float(settings.sweep_interval_s)},
            "prune-bodies": {"task": PRUNE_BODIES, "schedule": 3600.0},
        },
        worker_hijack_root_logger=False,
    )
    return app


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
            "store_processed": False,
        }
    return {}


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Each prefork child builds its own engine and pool: no connection crosses a fork.
    forget_runtime()
