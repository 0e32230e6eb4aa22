"""A fleet store on the test's Redis, and a bounded wait: what every fleet test needs.

`new_store` builds a `RedisStore` on the test's `redis_server` (quick to notice a stopped
server: `call_timeout` 1 s, reconnection backoff at most 0.2 s); `connected_store` holds
one open until Redis has answered (bounded by `WAIT`). `eventually` polls a condition,
plain or awaitable, every `POLL` seconds for at most `wait` seconds and says how long it
took.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from tests.helpers.redis_server import RedisServer
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.store import RedisStore

WAIT = 20.0
POLL = 0.02


def new_store(
    redis: RedisServer, *, call_timeout: float = 1.0, backoff_max: float = 0.2
) -> RedisStore:
    """A store on `redis`, not yet opened."""
    settings = FleetSettings(redis_url=redis.url)
    return RedisStore(settings, call_timeout=call_timeout, backoff_max=backoff_max)


@asynccontextmanager
async def connected_store(
    redis: RedisServer, *, call_timeout: float = 1.0, backoff_max: float = 0.2
) -> AsyncIterator[RedisStore]:
    """A store on `redis`, open and answered (for the body's duration)."""
    store = new_store(redis, call_timeout=call_timeout, backoff_max=backoff_max)
    async with store.opened():
        with trio.fail_after(WAIT):
            await store.wait_connected()
        yield store


async def eventually(check: Callable[[], Awaitable[bool] | bool], wait: float = WAIT) -> float:
    """Poll `check` until it holds, at most `wait` seconds; how long it took."""
    started = trio.current_time()
    with trio.fail_after(wait):
        for _ in range(int(wait / POLL) + 1):
            result = check()
            if result if isinstance(result, bool) else await result:
                return trio.current_time() - started
            await trio.sleep(POLL)
    raise AssertionError("condition never met")
