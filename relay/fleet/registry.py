"""The node registry: each node's entry in Redis with a short TTL, and the live listing.

Owns the entry a node publishes (`NodeEntry`: id, region, public ICE URIs, ready,
draining, load), its heartbeat, and `live_nodes`, the reader.

Redis layout (design §9), prefix `trelay:fleet:`:

- `trelay:fleet:node:<id>`: the entry as one JSON string, written with `SET … PX ttl`
  at every heartbeat. The key's TTL is the truth: a node that dies stops refreshing and
  its key expires within `ttl_seconds`, whatever its clock says.
- `trelay:fleet:nodes`: a sorted set of node ids scored by the wall-clock time their
  entry expires, so the reader finds the nodes with ZRANGEBYSCORE and MGET (two
  commands for any fleet size, never KEYS or SCAN) and prunes ids whose score is more
  than a TTL in the past (a grace for clock skew between nodes; a pruned id whose key
  still lives reappears at its next heartbeat).

Load: `allocations` active now; `relayed_bps`, bits relayed per second (both
directions) since the previous heartbeat; `cpu_share`, CPU seconds used per wall second
over that interval (1.0 = one core busy; with workers, their sum); `overloaded`, at or
over the node's own `[fleet] max_allocations` or `max_cpu_share`.

A node that starts draining publishes at once (within `DRAIN_POLL`), not at its next
beat. Invariants: the heartbeat never blocks the node: a call Redis does not answer is
bounded by the store's timeout and skipped while the store is lost. A stopping node
does not delete its entry: it said `draining` while it drained, and the entry lapses
within the TTL like a dead node's (coredis's connections end with the nursery that
stops the node, so a last write could not be made reliably).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import trio
from coredis.tokens import PureToken

from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.store import RedisStore, StoreUnavailable

logger = logging.getLogger(__name__)

KEY_PREFIX = "trelay:fleet:node:"
INDEX_KEY = "trelay:fleet:nodes"
# How often the heartbeat looks at the node's drain state between beats (a bool: no I/O).
DRAIN_POLL = 0.1


@dataclass(frozen=True, slots=True)
class LoadSample:
    """Cumulative counters read from the node at one moment."""

    allocations: int
    relayed_bytes: int
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the registry reads from the running node, from the outside."""

    load: Callable[[], LoadSample]
    ready: Callable[[], bool]
    draining: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class NodeEntry:
    node_id: str
    region: str
    public_uris: tuple[str, ...]
    ready: bool
    draining: bool
    allocations: int
    relayed_bps: float
    cpu_share: float
    updated_at: float  # wall-clock seconds
    overloaded: bool = False

    @property
    def available(self) -> bool:
        """Ready, not draining, not overloaded: a node new clients may be sent to."""
        return self.ready and not self.draining and not self.overloaded

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> NodeEntry:
        data = json.loads(text)
        return cls(
            node_id=str(data["node_id"]),
            region=str(data["region"]),
            public_uris=tuple(str(u) for u in data["public_uris"]),
            ready=bool(data["ready"]),
            draining=bool(data["draining"]),
            allocations=int(data["allocations"]),
            relayed_bps=float(data["relayed_bps"]),
            cpu_share=float(data["cpu_share"]),
            updated_at=float(data["updated_at"]),
            overloaded=bool(data.get("overloaded", False)),
        )


def generated_node_id() -> str:
    """Host name and a random suffix: unique per process, readable in a listing."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


@functools.cache
def process_node_id() -> str:
    """The id generated for this process, once: every part of a node that has no
    configured id (its registry entry, its overflow and quota tasks) uses the same."""
    return generated_node_id()


def node_id_of(settings: FleetSettings) -> str:
    """This node's id: the configured one, else this process's generated one (the
    supervisor of workers hands its own to them, `trelay.process.workers`)."""
    return settings.node_id or process_node_id()


def node_key(node_id: str) -> str:
    return KEY_PREFIX + node_id


class NodeRegistry:
    """Publishes this node's entry every `heartbeat_seconds` (`heartbeat`, in a nursery)."""

    def __init__(
        self,
        store: RedisStore,
        settings: FleetSettings,
        view: NodeView,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.settings, self.view = store, settings, view
        self.node_id = node_id_of(settings)
        self.clock, self.wall_clock = clock, wall_clock
        self._previous: tuple[float, LoadSample] | None = None

    def entry(self) -> NodeEntry:
        """The entry now; rates are over the interval since the previous call."""
        now, sample = self.clock(), self.view.load()
        bps = cpu = 0.0
        if self._previous is not None:
            then, before = self._previous
            elapsed = now - then
            if elapsed > 0:
                bps = max(0, sample.relayed_bytes - before.relayed_bytes) * 8 / elapsed
                cpu = max(0.0, sample.cpu_seconds - before.cpu_seconds) / elapsed
        self._previous = (now, sample)
        return NodeEntry(
            node_id=self.node_id,
            region=self.settings.region,
            public_uris=self.settings.public_uris,
            ready=self.view.ready(),
            draining=self.view.draining(),
            allocations=sample.allocations,
            relayed_bps=bps,
            cpu_share=cpu,
            updated_at=self.wall_clock(),
            overloaded=self.settings.overloaded(sample.allocations, cpu),
        )

    async def publish(self) -> None:
        """Write the entry now (raises `StoreUnavailable` when Redis does not answer)."""
        entry = self.entry()
        ttl = self.settings.ttl_seconds
        key = node_key(self.node_id)
        await self.store.call(lambda c: c.set(key, entry.to_json(), px=int(ttl * 1000)))
        expires = entry.updated_at + ttl
        await self.store.call(lambda c: c.zadd(INDEX_KEY, {self.node_id: expires}))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store and beat until cancelled."""
        async with self.store.opened():
            await self.heartbeat(task_status=task_status)

    async def heartbeat(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Publish every `heartbeat_seconds` while the store is connected, until cancelled."""
        task_status.started()
        beat = self.settings.heartbeat_seconds
        while True:
            # Publish as soon as Redis answers (at start, after a loss), then every beat.
            with trio.move_on_after(beat):
                await self.store.wait_connected()
            if self.store.connected:
                # The store logged a failure once; the next beat tries again.
                with contextlib.suppress(StoreUnavailable):
                    await self.publish()
                await self._pause(beat)

    async def _pause(self, beat: float) -> None:
        """Sleep a beat, or less: a node that starts (or stops) draining says so at once,
        so placement and the other nodes' overflow stop sending it clients."""
        was = self.view.draining()
        with trio.move_on_after(beat):
            # Polled: the registry reads the node from the outside, as a scrape does.
            while self.view.draining() == was:  # noqa: ASYNC110
                await trio.sleep(DRAIN_POLL)


async def live_nodes(store: RedisStore, ttl_seconds: float) -> list[NodeEntry]:
    """The entries of the nodes alive now, by node id (raises `StoreUnavailable`)."""
    now = store.wall_clock()
    # Ids whose entry should have expired a TTL ago are gone for good (grace: skew).
    await store.call(lambda c: c.zremrangebyscore(INDEX_KEY, float("-inf"), now - ttl_seconds))
    ids = await store.call(lambda c: c.zrange(INDEX_KEY, "-inf", "+inf", sortby=PureToken.BYSCORE))
    names = sorted(str(i) for i in ids)
    if not names:
        return []
    values = await store.call(lambda c: c.mget([node_key(n) for n in names]))
    return [NodeEntry.from_json(v) for v in values if v is not None]


async def start_fleet(
    nursery: trio.Nursery, settings: FleetSettings | None, view: NodeView
) -> NodeRegistry | None:
    """With `[fleet]`: start the store and the heartbeat, return the registry (its
    `store` says whether Redis answers). Without: None, and nothing touches Redis."""
    if settings is None:
        return None
    registry = NodeRegistry(RedisStore(settings), settings, view)
    await nursery.start(registry.run)
    logger.info("fleet: node %s in region %s", registry.node_id, settings.region)
    return registry
