"""The load generator of `payhook bench`: httpx AsyncClient over a fixed number of connections.

Two shapes: closed loop (every connection sends its next request as soon as the previous one
is answered: the most a server accepts) and paced (requests start on a fixed schedule, whatever
the answers: a steady offered load). Every request is bounded by a timeout; nothing retries.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from worker.tooling.bench.events import Post

TRANSPORT_ATTEMPTS = 3

REQUEST_TIMEOUT_S = 30.0
ACCEPTED = frozenset({200, 202})

Advance = Callable[[int], None]


@dataclass
class LoadResult:
    """What the server answered; times from `time.perf_counter()`."""

    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of accepted requests, seconds
    delivery_ids: list[int] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # answer (status or error) -> count
    resent: int = 0  # requests sent again after the connection failed under them

    @property
    def accepted(self) -> int:
        return len(self.latencies)

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed

    def latency_ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (as `payhook stats` computes its lag); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def closed_loop(
    base_url: str, posts: Sequence[Post], connections: int, advance: Advance
) -> LoadResult:
    """Send every post, `connections` at a time, each as soon as a connection is free."""
    return asyncio.run(_closed_loop(base_url, posts, connections, advance))


def paced(
    base_url: str, posts: Sequence[Post], connections: int, rate: float, advance: Advance
) -> LoadResult:
    """Start post i at `i / rate` seconds, on at most `connections` connections at once."""
    return asyncio.run(_paced(base_url, posts, connections, rate, advance))


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=REQUEST_TIMEOUT_S,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def _send(client: httpx.AsyncClient, post: Post, result: LoadResult) -> None:
    began = time.perf_counter()
    for attempt in range(TRANSPORT_ATTEMPTS):
        try:
            answer = await client.post(post.path, content=post.body, headers=post.headers)
            break
        except httpx.TransportError as error:
            # A connection closed under the request (a keep-alive race, a reset): the provider
            # would send it again, and so do we. A stored copy would only be a duplicate.
            if attempt + 1 == TRANSPORT_ATTEMPTS:
                result.refused[type(error).__name__] += 1
                return
            result.resent += 1
            await asyncio.sleep(0.05 * (attempt + 1))
        except httpx.HTTPError as error:
            result.refused[type(error).__name__] += 1
            return
    if answer.status_code not in ACCEPTED:
        result.refused[str(answer.status_code)] += 1
        return
    result.latencies.append(time.perf_counter() - began)
    delivery_id = answer.json().get("delivery_id")
    if isinstance(delivery_id, int):
        result.delivery_ids.append(delivery_id)


async def _closed_loop(
    base_url: str, posts: Sequence[Post], connections: int, advance: Advance
) -> LoadResult:
    result = LoadResult()
    pending = iter(posts)

    async def connection(client: httpx.AsyncClient) -> None:
        for post in pending:  # shared: each post is taken by exactly one connection
            await _send(client, post, result)
            advance(1)

    async with _client(base_url, connections) as client:
        await _warm_up(client, connections)
        result.started = time.perf_counter()
        await asyncio.gather(*(connection(client) for _ in range(connections)))
        result.finished = time.perf_counter()
    return result


async def _paced(
    base_url: str, posts: Sequence[Post], connections: int, rate: float, advance: Advance
) -> LoadResult:
    result = LoadResult()
    free = asyncio.Semaphore(connections)
    running: set[asyncio.Task[None]] = set()

    async def one(client: httpx.AsyncClient, post: Post) -> None:
        try:
            await _send(client, post, result)
            advance(1)
        finally:
            free.release()

    async with _client(base_url, connections) as client:
        await _warm_up(client, connections)
        result.started = time.perf_counter()
        for i, post in enumerate(posts):
            delay = result.started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await free.acquire()  # all connections busy: this request starts late
            task = asyncio.create_task(one(client, post))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        result.finished = time.perf_counter()
    return result


async def _warm_up(client: httpx.AsyncClient, connections: int) -> None:
    """Open the connections before the clock starts (a GET that stores nothing)."""
    await asyncio.gather(
        *(client.get("/healthz") for _ in range(connections)), return_exceptions=True
    )
