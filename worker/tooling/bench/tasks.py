"""The empty task of `payhook bench`: imported only by the benchmark's worker (`--include`).

It measures what Celery alone costs per task with payhook's worker settings (acks_late,
prefetch 1, prefork, task events): the ceiling that processing a delivery is compared with.
"""

from __future__ import annotations

from celery import shared_task

from worker.tooling.bench.stack import EMPTY_TASK


@shared_task(name=EMPTY_TASK, acks_late=True)
def empty_task() -> None:
    """Do nothing: the drain rate of this task is Celery's own ceiling."""
