"""The receiver's publishes on PostgreSQL: from the event loop while a Redis broker answers.

A webhook request stores its deliveries from the event loop (tasks/storage/intake.py), then
publishes them. On a healthy Redis a publish is one LPUSH on loopback or a near host: made from
the event loop, it costs less than the trip to a request thread and back that waiting for it
from a thread would take (about a quarter of the receiver's CPU per delivery).

Such a publish is tried once, without Celery's retries. If it fails, that delivery and every
publish for the next INLINE_PAUSE_S go through a request thread with the retries, as on any
other broker (RabbitMQ's publisher confirms wait on the broker's disk: never on the event loop).
So a broker that refuses connections costs the event loop one failed attempt per pause; one that
hangs, at most its socket timeout (5 s). A publish that fails in the thread too is left to the
sweeper: the delivery is in the database already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("payhook.web")

INLINE_PAUSE_S = 30.0


class Publisher:
    def __init__(
        self,
        publish_once: Callable[[int], object],
        try_publish: Callable[[int], object],
        *,
        inline: bool,
    ) -> None:
        self._publish_once = publish_once  # one attempt, raises on failure
        self._try_publish = try_publish  # with retries, never raises (logs, sweeper)
        self._inline = inline
        self._inline_after = 0.0  # monotonic time from which the event loop publishes again

    async def publish(self, delivery_ids: Sequence[int]) -> None:
        """Publish stored deliveries, in order; a failure is logged and left to the sweeper."""
        rest = list(delivery_ids)
        if self._inline and time.monotonic() >= self._inline_after:
            while rest:
                try:
                    self._publish_once(rest[0])
                except Exception as error:  # noqa: BLE001  (any broker failure)
                    self._inline_after = time.monotonic() + INLINE_PAUSE_S
                    log.warning(
                        "publish from the event loop failed (%s): publishing from threads, "
                        "with retries, for %.0f s",
                        type(error).__name__,
                        INLINE_PAUSE_S,
                    )
                    break
                rest.pop(0)
        if rest:
            await run_in_threadpool(self._in_thread, rest)

    def _in_thread(self, delivery_ids: list[int]) -> None:
        for delivery_id in delivery_ids:
            self._try_publish(delivery_id)
