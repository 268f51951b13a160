"""How many task messages wait in a queue, asked of the broker itself."""

from __future__ import annotations

import logging
from typing import Any

from amqp.exceptions import NotFound
from celery import Celery
from kombu.exceptions import ChannelError

log = logging.getLogger("payhook.broker")


def queue_depth(app: Celery, queue: str) -> int | None:
    """Messages waiting in `queue`, or None when the broker does not answer.

    A passive declare: the length of the Redis lists, or RabbitMQ's ready messages. A queue that
    does not exist (an empty Redis list has no key) holds nothing.
    """
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel: Any = connection.default_channel
            declared = channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except NotFound:
        return 0
    except ChannelError as error:
        if "NOT_FOUND" in str(error):  # kombu's virtual transports (Redis, file system)
            return 0
        log.warning("queue depth of %s unknown: %s", queue, type(error).__name__)
        return None
    except Exception as error:  # noqa: BLE001  (any broker failure: the depth is unknown)
        log.warning("queue depth of %s unknown: %s", queue, type(error).__name__)
        return None
