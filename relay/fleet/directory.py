"""The node directory: the token API's cached listing of the live nodes.

Owns how an API node reads the registry (`trelay.fleet.registry.live_nodes`) for
placement (design §9) without making each request a Redis round trip:

- At most one read per `refresh_seconds` (1 s): a request that finds the listing older
  asks the directory's task (`run`) for a fresh one and waits for it at most
  `wait_seconds`; concurrent requests share that one read. A request that finds it
  fresh does not wait at all.
- When Redis does not answer, the last listing is used for up to `ttl_seconds` (the
  registry's TTL: no entry in it can be older news than that); after that `listing()`
  answers None and the caller falls back to its static list. Each change between the
  two is logged once.

So a node that starts draining (its entry says so at its next heartbeat) leaves
placement at the next refresh after that, and a node that dies, within the TTL.

Counters (plain ints, `trelay.ops.metrics.PlacementCollector` serves them): `reads` of
Redis attempted, and `fallbacks`, the requests answered with no usable listing (the
token API then hands out its static list).

Invariants: the cache holds one listing (bounded by the registry's size); a request
never waits longer than `wait_seconds`, whatever Redis does; nothing here is on the data
path or in TURN authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from trelay.fleet.registry import NodeEntry, live_nodes
from trelay.fleet.store import RedisStore, StoreUnavailable

logger = logging.getLogger(__name__)

DEFAULT_REFRESH = 1.0
DEFAULT_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class Listing:
    """The live nodes as Redis listed them at `fetched_at` (the directory's clock)."""

    nodes: tuple[NodeEntry, ...]
    fetched_at: float


class NodeDirectory:
    """Live nodes for placement; `run` (in a nursery) does the reading."""

    def __init__(
        self,
        store: RedisStore,
        ttl_seconds: float,
        *,
        refresh_seconds: float = DEFAULT_REFRESH,
        wait_seconds: float = DEFAULT_WAIT,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.store, self.ttl_seconds = store, ttl_seconds
        self.refresh_seconds, self.wait_seconds = refresh_seconds, wait_seconds
        self.clock = clock
        self.last: Listing | None = None
        self.reads = 0  # reads of Redis attempted, for tests and metrics
        self.fallbacks = 0  # `usable()` answers of None: requests given the static list
        self._attempted_at: float | None = None
        self._wanted = trio.Event()
        self._done = trio.Event()
        self._stale_logged = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read Redis whenever a request wants a fresher listing, until cancelled."""
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            await self._read()
            done, self._done = self._done, trio.Event()
            done.set()

    async def _read(self) -> None:
        self._attempted_at = self.clock()
        self.reads += 1
        try:
            nodes = await live_nodes(self.store, self.ttl_seconds)
        except StoreUnavailable:
            return  # the store logged it; the last listing serves while it may
        self.last = Listing(tuple(nodes), self.clock())
        if self._stale_logged:
            logger.info("fleet: node listing from Redis again: placement is back")
            self._stale_logged = False

    async def listing(self) -> Listing | None:
        """The live nodes, refreshed if older than `refresh_seconds`; None when no listing
        younger than the TTL exists (the caller falls back to its static list)."""
        attempted = self._attempted_at
        if attempted is None or self.clock() - attempted >= self.refresh_seconds:
            done = self._done
            self._wanted.set()
            with trio.move_on_after(self.wait_seconds):
                await done.wait()
        return self.usable()

    def usable(self) -> Listing | None:
        """The last listing if younger than the TTL, else None (logged once)."""
        last = self.last
        if last is not None and self.clock() - last.fetched_at <= self.ttl_seconds:
            return last
        self.fallbacks += 1
        if not self._stale_logged:
            self._stale_logged = True
            logger.warning(
                "fleet: no node listing from Redis for %g s: the token API hands out its "
                "static ICE URIs until Redis answers",
                self.ttl_seconds,
            )
        return None
