"""Worker metrics, observed through Celery signals: tasks/ returns outcome dicts and knows
nothing of Prometheus.

An outcome is counted once, by the run that recorded it: a redelivered task that finds its
outcome already recorded (recorded before this run started) returns it again and is not counted
again. Whether this run recorded it, and its lag, come from the run itself
(`tasks.processing.last_processed`): the outcome dict carries no times.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import task_failure, task_postrun, task_prerun, task_retry, task_success

from domain.outcomes import OutcomeKind, Reason
from tasks.processing import last_processed
from tasks.shims import PROCESS_DELIVERY, RELAY, SWEEP
from worker.metrics import (
    DEAD_DELIVERIES,
    DEFERRALS,
    NOTIFICATION_SENDS,
    OUTCOME_LAG,
    OUTCOMES,
    TASK_DURATION,
    TASK_FAILURES,
    TASK_RETRIES,
)

OBSERVED = frozenset({PROCESS_DELIVERY, SWEEP, RELAY})


class TaskObserver:
    """Receives the task signals of one worker process (and of its prefork children)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def connect(self) -> None:
        task_prerun.connect(self.started, weak=False)
        task_postrun.connect(self.finished, weak=False)
        task_success.connect(self.succeeded, weak=False)
        task_retry.connect(self.retried, weak=False)
        task_failure.connect(self.failed, weak=False)

    def disconnect(self) -> None:
        task_prerun.disconnect(self.started)
        task_postrun.disconnect(self.finished)
        task_success.disconnect(self.succeeded)
        task_retry.disconnect(self.retried)
        task_failure.disconnect(self.failed)

    def started(self, task_id: str, task: Any, **_: Any) -> None:
        if task.name in OBSERVED:
            self._started[task_id] = time.perf_counter()

    def finished(self, task_id: str, task: Any, **_: Any) -> None:
        began = self._started.pop(task_id, None)
        if began is not None:
            TASK_DURATION.labels(task=task.name).observe(time.perf_counter() - began)

    def succeeded(self, sender: Any, result: Any, **_: Any) -> None:
        if not isinstance(result, dict):
            return
        if sender.name == PROCESS_DELIVERY and result.get("kind") == OutcomeKind.DEFERRED.value:
            DEFERRALS.labels(reason=str(result.get("reason") or "")).inc()  # not an outcome
        elif sender.name == PROCESS_DELIVERY and result.get("kind"):
            self._outcome(result)
        elif sender.name == SWEEP and result.get("dead"):
            dead, reason = int(result["dead"]), Reason.RETRY_BUDGET_EXHAUSTED.value
            OUTCOMES.labels(kind=OutcomeKind.DEAD.value, reason=reason).inc(dead)
            DEAD_DELIVERIES.labels(reason=reason).inc(dead)
        elif sender.name == RELAY:
            for label in ("delivered", "retrying", "failed"):
                if result.get(label):
                    NOTIFICATION_SENDS.labels(result=label).inc(int(result[label]))

    def retried(self, sender: Any, reason: Any, **_: Any) -> None:
        if sender.name in OBSERVED:
            cause = getattr(reason, "exc", None)
            label = "deferred" if cause is None else type(cause).__name__
            TASK_RETRIES.labels(task=sender.name, cause=label).inc()

    def failed(self, sender: Any, **_: Any) -> None:
        if sender.name in OBSERVED:
            TASK_FAILURES.labels(task=sender.name).inc()

    def _outcome(self, result: dict[str, Any]) -> None:
        last = last_processed(int(result["delivery_id"]))
        if last is not None and last.recorded_at is None:
            return  # recorded by an earlier run: this one only returned it again
        kind, reason = str(result["kind"]), str(result.get("reason") or "")
        OUTCOMES.labels(kind=kind, reason=reason).inc()
        if kind == OutcomeKind.DEAD.value:
            DEAD_DELIVERIES.labels(reason=reason).inc()
        if last is not None and (lag := last.lag_s) is not None:
            OUTCOME_LAG.labels(provider=last.provider).observe(lag)
