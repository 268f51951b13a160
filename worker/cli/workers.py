"""`payhook worker` and `payhook beat`: Celery's own programs, on this process's runtime.

Only what a worker needs is imported here: every prefork child inherits this process's memory.
"""

from __future__ import annotations

import argparse
import logging
import sys

from worker.runtime import start_runtime
from worker.settings import Settings
from worker.taskqueue.app import QUEUE
from worker.taskqueue.metrics import TaskObserver
from worker.taskqueue.metrics_server import MetricsSetupError, serve_worker_metrics


def worker_command(settings: Settings, args: argparse.Namespace, extra: list[str]) -> int:
    if args.metrics_port is not None:
        try:
            serve_worker_metrics(
                port=args.metrics_port,
                address=args.metrics_address,
                broker=settings.broker if settings.uses_redis else None,
                queue=QUEUE,
                database=settings.database if settings.notify_endpoints() else None,
            )
        except MetricsSetupError as error:
            print(f"payhook: {error}", file=sys.stderr)
            return 2
    runtime = start_runtime(settings, pre_ping=False)
    if args.metrics_port is not None:
        TaskObserver().connect()
    quiet_task_lines()
    runtime.app.worker_main(["worker", "--loglevel=INFO", *extra])
    return 0


def quiet_task_lines() -> None:
    """No "Task … received" and "Task … succeeded" lines from Celery: payhook's own line per
    delivery ("outcome …", with the task id, the delivery and its outcome) says it all, and the
    two lines cost a fifth of a worker's CPU per delivery. Celery's warnings and errors stay; a
    task's whole life is in Flower."""
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)


# Beat's schedule in memory: nothing to write, so beat runs in a read-only container or from
# systemd's `/`. A restarted beat starts its periods afresh: the sweep and the prune (both
# idempotent) run one period after it starts, whenever they last ran.
IN_MEMORY_SCHEDULE = "--scheduler=celery.beat:Scheduler"


def beat_command(settings: Settings, _args: argparse.Namespace, extra: list[str]) -> int:
    runtime = start_runtime(settings)
    if settings.uses_data_dir:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        schedule = [f"--schedule={settings.data_dir / 'beat-schedule'}"]
    else:
        schedule = [IN_MEMORY_SCHEDULE]
    runtime.app.start(["beat", "--loglevel=INFO", *schedule, *extra])
    return 0
