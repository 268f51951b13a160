"""The Celery tasks: thin, explicitly named, ids in and a small outcome dict out.

The process that hosts them (worker/) installs a `Runtime` factory; the runtime itself is built
lazily, once per process, after any fork.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from celery import Task, shared_task

from domain.outcomes import OutcomeKind, Reason
from domain.providers import Reading
from tasks.policy import RetryPolicy
from tasks.processing import (
    UnknownDelivery,
    process_delivery,
    record_failure,
    release_attempt,
    start_attempt,
)
from tasks.relaying import Answer, RelayPolicy, relay
from tasks.retention import prune_bodies
from tasks.storage.errors import cause, is_transient
from tasks.storage.uow import UnitOfWork
from tasks.sweeping import sweep
from tasks.waking import wake_due

PROCESS_DELIVERY = "payhook.process_delivery"
SWEEP = "payhook.sweep"
WAKE = "payhook.wake"
PRUNE_BODIES = "payhook.prune_bodies"
RELAY = "payhook.relay_notifications"

log = logging.getLogger("payhook.tasks")


class Runtime(Protocol):
    policy: RetryPolicy
    reading: Reading
    body_retention: timedelta

    def unit_of_work(self) -> UnitOfWork: ...

    def now(self) -> datetime: ...

    def publish(self, delivery_id: int) -> None: ...

    def queued(self) -> int | None: ...

    # Host notifications: where they go, how they are retried, how one is posted.
    notify_endpoints: tuple[str, ...]
    relay_policy: RelayPolicy

    def post_notification(self, url: str, message_id: str, body: bytes) -> Answer: ...

    def request_relay(self) -> None: ...


_factory: Callable[[], Runtime] | None = None
_runtime: Runtime | None = None


def install(factory: Callable[[], Runtime]) -> None:
    """Say how this process builds its runtime; forget any runtime built before a fork."""
    global _factory, _runtime
    _factory, _runtime = factory, None


def forget_runtime() -> None:
    """Called in each prefork child: connections are never shared across a fork."""
    global _runtime
    _runtime = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        if _factory is None:
            raise RuntimeError("no payhook runtime installed in this process")
        _runtime = _factory()
    return _runtime


@shared_task(
    name=PROCESS_DELIVERY, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def process_delivery_task(self: Task[Any, Any], delivery_id: int) -> dict[str, object]:
    """Apply one stored delivery; returns its outcome (kind, reason, ids) for Flower."""
    rt = runtime()
    uow = rt.unit_of_work()
    try:
        with uow.holding():  # one pooled connection for both
            # Marked started first: an earlier attempt still marked so was lost (its worker
            # killed).
            finished = start_attempt(delivery_id, uow, rt.now(), rt.policy)
            result = finished or process_delivery(delivery_id, uow, rt.now(), rt.policy, rt.reading)
    except UnknownDelivery:
        log.error("no such delivery; nothing to do", extra={"delivery_id": delivery_id})
        return {"kind": None, "reason": "unknown_delivery", "delivery_id": delivery_id}
    except Exception as error:
        retries = self.request.retries or 0
        if is_transient(error) and retries < rt.policy.max_task_retries:
            log.warning(
                "transient error, retrying: %s",
                cause(error),
                extra={"delivery_id": delivery_id, "retries": retries},
            )
            countdown = whole_seconds(rt.policy.transient_delay(retries))
            _release(rt, delivery_id, countdown)
            raise self.retry(exc=error, countdown=countdown) from None
        # A programming error or an exhausted budget: record it, do not retry it forever.
        log.exception("delivery failed permanently", extra={"delivery_id": delivery_id})
        reason = Reason.RETRY_BUDGET_EXHAUSTED if is_transient(error) else Reason.PROCESSING_ERROR
        return record_failure(delivery_id, rt.unit_of_work(), rt.now(), reason).as_dict()
    if result.retry_in is not None:
        # It waits in the database, not in the broker: the wake task or a change of its
        # payment publishes it again.
        log.info(
            "deferred (%s), next attempt in %.1fs at the latest",
            result.outcome.reason,
            result.retry_in,
            extra={"delivery_id": delivery_id},
        )
        return result.as_dict()
    for woken in result.woken:
        _publish_woken(rt, woken)
    if result.outcome.kind is OutcomeKind.APPLIED:
        rt.request_relay()  # its notifications are committed: one relay run per change
    outcome = result.as_dict()
    log.info("outcome %s", outcome["kind"], extra=outcome)
    return outcome


def _release(rt: Runtime, delivery_id: int, countdown: int) -> None:
    """Say that this attempt ends in a retry, not lost; if the database is what failed, the next
    attempt counts this one as lost, once."""
    try:
        release_attempt(delivery_id, rt.unit_of_work(), rt.now() + timedelta(seconds=countdown))
    except Exception as error:
        if not is_transient(error):
            raise


def whole_seconds(delay: float) -> int:
    """A retry countdown in whole seconds, at least one: on RabbitMQ quorum queues Celery
    delays a retry through native delayed delivery, which counts whole seconds (it would cut
    1.7 s to 1 s, so the message arrived before its ETA) and refuses anything under one."""
    return max(1, math.ceil(delay))


def _publish_woken(rt: Runtime, delivery_id: int) -> None:
    try:
        rt.publish(delivery_id)
    except Exception as error:  # noqa: BLE001  (a broker failure: the sweeper covers it)
        log.warning(
            "publishing a woken delivery failed, the sweeper will: %s",
            type(error).__name__,
            extra={"delivery_id": delivery_id},
        )


@shared_task(name=WAKE, acks_late=True)
def wake_task() -> dict[str, int]:
    """Publish deferred deliveries whose next attempt has come."""
    rt = runtime()
    woken = wake_due(
        rt.unit_of_work(), rt.now(), rt.policy, lambda delivery_id: _publish_woken(rt, delivery_id)
    )
    if woken:
        log.info("woke %d deferred deliveries", len(woken))
    return {"woken": len(woken)}


@shared_task(name=SWEEP, acks_late=True)
def sweep_task() -> dict[str, int]:
    """Publish again the deliveries whose task message is lost; never one merely queued."""
    rt = runtime()
    report = sweep(rt.unit_of_work(), rt.now(), rt.policy, rt.publish, rt.queued)
    if report.republished:
        log.warning(
            "sweeper re-published %d deliveries (%s messages queued)",
            len(report.republished),
            "unknown" if report.queued is None else report.queued,
        )
    return {"republished": len(report.republished), "queued": report.queued or 0}


@shared_task(name=PRUNE_BODIES, acks_late=True)
def prune_bodies_task() -> dict[str, int]:
    """Empty raw bodies older than the retention period; outcomes stay."""
    rt = runtime()
    pruned = prune_bodies(rt.unit_of_work(), rt.now(), rt.body_retention)
    if pruned:
        log.info("pruned the raw bodies of %d deliveries", pruned)
    return {"pruned": pruned}


@shared_task(name=RELAY, acks_late=True)
def relay_task() -> dict[str, int]:
    """Push due notifications to the host's endpoints; beat runs it too, for retries."""
    rt = runtime()
    started = time.monotonic()
    report = relay(
        rt.unit_of_work,
        rt.now,
        rt.notify_endpoints,
        rt.post_notification,
        rt.relay_policy,
        elapsed=lambda: time.monotonic() - started,
    )
    if report.failed:
        log.warning("%d notifications failed for good (replayable)", report.failed)
    return report.as_dict()
