"""What one process needs to run the use cases: an engine (built lazily), a clock, a publisher."""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from celery import Celery
from sqlalchemy import Engine

from domain.providers import Reading
from tasks import shims
from tasks.policy import RetryPolicy
from tasks.relaying import Answer, RelayPolicy
from tasks.shims import PROCESS_DELIVERY, RELAY
from tasks.storage.engine import make_engine
from tasks.storage.uow import UnitOfWork
from worker.settings import Settings
from worker.taskqueue.app import QUEUE, create_app
from worker.taskqueue.depth import queue_depth

if TYPE_CHECKING:
    from worker.taskqueue.notify import NotificationSender

log = logging.getLogger("payhook.runtime")
# A publish tried once: Celery's retry machinery, which also bounds a reconnect, with no retry.
_ONE_ATTEMPT = {"max_retries": 0, "interval_start": 0, "interval_step": 0, "interval_max": 0}


class ProcessRuntime:
    def __init__(
        self, settings: Settings, app: Celery, *, pre_ping: bool = True, fixed_pool: bool = False
    ) -> None:
        self.settings = settings
        self.app = app
        self.pre_ping = pre_ping
        self.fixed_pool = fixed_pool
        self.policy: RetryPolicy = settings.retry_policy()
        self.reading: Reading = settings.reading()
        self.body_retention = timedelta(days=settings.body_retention_days)
        self.notify_endpoints: tuple[str, ...] = settings.notify_endpoints()
        self.relay_policy: RelayPolicy = settings.relay_policy()

    @cached_property
    def engine(self) -> Engine:
        return make_engine(
            self.settings.database,
            pool_size=self.settings.db_pool_size,
            lock_timeout_ms=self.settings.db_lock_timeout_ms,
            pre_ping=self.pre_ping,
            max_overflow=0 if self.fixed_pool else None,
            prepared_statements=self.settings.db_prepared_statements,
        )

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def publish(self, delivery_id: int) -> None:
        self.app.send_task(PROCESS_DELIVERY, args=[delivery_id])

    def publish_once(self, delivery_id: int) -> None:
        """Publish with one attempt (a refused connection fails at once); raises on failure."""
        self.app.send_task(PROCESS_DELIVERY, args=[delivery_id], retry_policy=_ONE_ATTEMPT)

    def queued(self) -> int | None:
        """Task messages waiting in the broker's task queue; None when it does not answer."""
        return queue_depth(self.app, QUEUE)

    @cached_property
    def _sender(self) -> NotificationSender:
        # Imported here, in the process that posts: a worker loads httpx and standardwebhooks
        # after it forks, never before (each prefork child would carry them), and only when
        # there is something to post.
        notify = importlib.import_module("worker.taskqueue.notify")
        sender: NotificationSender = notify.NotificationSender(self.settings.notify_secrets()[0])
        return sender

    def post_notification(self, url: str, message_id: str, body: bytes) -> Answer:
        return self._sender.post(url, message_id, body, self.now())

    def request_relay(self) -> None:
        """Publish one relay run, after a commit that wrote notifications; on a broker
        failure the relay that `payhook beat` schedules sends them a little later."""
        if not self.notify_endpoints:
            return
        try:
            self.app.send_task(RELAY)
        except Exception as error:  # noqa: BLE001  (any broker failure: beat's relay covers it)
            log.warning("relay publish failed, beat's relay will send: %s", type(error).__name__)

    def try_publish(self, delivery_id: int) -> bool:
        """Publish; on a broker failure say so and leave the delivery to the sweeper."""
        try:
            self.publish(delivery_id)
        except Exception as error:  # noqa: BLE001  (any broker failure: the sweeper covers it)
            log.warning(
                "publish failed, the sweeper will re-publish: %s",
                type(error).__name__,
                extra={"delivery_id": delivery_id},
            )
            return False
        return True


def start_runtime(
    settings: Settings, *, pre_ping: bool = True, fixed_pool: bool = False
) -> ProcessRuntime:
    """This process's runtime on a new Celery app, installed as the one the tasks use.

    Workers pass `pre_ping=False`: a task that meets a dead pooled connection retries it as a
    transient error, so checking every connection before use would only add a round trip.
    The receiver passes `fixed_pool=True`: its pool never overflows (it bounds its request
    threads to the pool's size instead), so that no request opens a connection of its own.
    """
    runtime = ProcessRuntime(
        settings, create_app(settings), pre_ping=pre_ping, fixed_pool=fixed_pool
    )
    shims.install(lambda: runtime)
    return runtime
