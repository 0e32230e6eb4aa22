"""The node registry on a real redis-server: entries with region, URIs and load; a node
that stops refreshing disappears within the TTL; a draining node says so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trio

from tests.helpers.fleet_store import WAIT, connected_store
from tests.helpers.redis_server import RedisServer
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.registry import (
    LoadSample,
    NodeEntry,
    NodeRegistry,
    NodeView,
    live_nodes,
    node_key,
    start_fleet,
)
from trelay.fleet.store import RedisStore

TTL = 2.0


@dataclass
class FakeNode:
    allocations: int = 0
    relayed_bytes: int = 0
    cpu_seconds: float = 0.0
    ready: bool = True
    draining: bool = False

    def view(self) -> NodeView:
        return NodeView(
            load=lambda: LoadSample(self.allocations, self.relayed_bytes, self.cpu_seconds),
            ready=lambda: self.ready,
            draining=lambda: self.draining,
        )


def fleet_settings(server: RedisServer, node_id: str, region: str) -> FleetSettings:
    return FleetSettings(
        redis_url=server.url,
        node_id=node_id,
        region=region,
        public_uris=(f"turn:{node_id}.example.org:3478?transport=udp",),
        heartbeat_seconds=0.2,
        ttl_seconds=TTL,
    )


async def poll_nodes(
    store: RedisStore, condition: Callable[[dict[str, NodeEntry]], bool]
) -> dict[str, NodeEntry]:
    with trio.fail_after(WAIT):
        while True:
            nodes = {n.node_id: n for n in await live_nodes(store, TTL)}
            if condition(nodes):
                return nodes
            await trio.sleep(0.05)


async def test_two_nodes_appear_with_region_uris_and_load(redis_server: RedisServer) -> None:
    paris, tokyo = FakeNode(allocations=3), FakeNode(allocations=1, draining=True)
    async with connected_store(redis_server) as reader, trio.open_nursery() as nursery:
        fleets = [
            await start_fleet(nursery, fleet_settings(redis_server, "par-1", "eu"), paris.view()),
            await start_fleet(nursery, fleet_settings(redis_server, "tyo-1", "ap"), tokyo.view()),
        ]
        assert all(f is not None for f in fleets)
        nodes = await poll_nodes(reader, lambda n: set(n) == {"par-1", "tyo-1"})
        assert (nodes["par-1"].region, nodes["tyo-1"].region) == ("eu", "ap")
        assert nodes["par-1"].public_uris == ("turn:par-1.example.org:3478?transport=udp",)
        assert (nodes["par-1"].allocations, nodes["tyo-1"].allocations) == (3, 1)
        assert (nodes["par-1"].draining, nodes["tyo-1"].draining) == (False, True)
        assert nodes["par-1"].ready is True
        # Traffic and CPU between two heartbeats show as rates.
        paris.relayed_bytes += 1_000_000
        paris.cpu_seconds += 0.05
        nodes = await poll_nodes(reader, lambda n: n["par-1"].relayed_bps > 0)
        assert nodes["par-1"].cpu_share > 0
        nursery.cancel_scope.cancel()


async def test_a_node_that_stops_refreshing_disappears_within_the_ttl(
    redis_server: RedisServer,
) -> None:
    async with connected_store(redis_server) as store:
        # Published once, then never again: as a node that was killed.
        dead = NodeRegistry(store, fleet_settings(redis_server, "dead-1", "eu"), FakeNode().view())
        await dead.publish()
        nodes = await poll_nodes(store, lambda n: "dead-1" in n)
        assert nodes["dead-1"].region == "eu"
        ttl_ms = await store.call(lambda c: c.pttl(node_key("dead-1")))
        assert 0 < ttl_ms <= TTL * 1000
        await poll_nodes(store, lambda n: "dead-1" not in n)


async def test_a_node_stopped_disappears_within_the_ttl(redis_server: RedisServer) -> None:
    async with connected_store(redis_server) as store:
        settings = fleet_settings(redis_server, "gone-1", "eu")
        async with trio.open_nursery() as nursery:
            await start_fleet(nursery, settings, FakeNode().view())
            await poll_nodes(store, lambda n: "gone-1" in n)
            nursery.cancel_scope.cancel()
        await poll_nodes(store, lambda n: "gone-1" not in n)
        # The reader pruned the index once the key had lapsed a TTL ago, or will.
        assert await store.call(lambda c: c.exists([node_key("gone-1")])) == 0


async def test_a_node_that_starts_draining_says_so(redis_server: RedisServer) -> None:
    node = FakeNode()
    async with connected_store(redis_server) as store, trio.open_nursery() as nursery:
        await start_fleet(nursery, fleet_settings(redis_server, "drain-1", "eu"), node.view())
        await poll_nodes(store, lambda n: "drain-1" in n and not n["drain-1"].draining)
        node.draining, node.ready = True, False
        nodes = await poll_nodes(store, lambda n: n["drain-1"].draining)
        assert nodes["drain-1"].ready is False
        nursery.cancel_scope.cancel()


async def test_no_fleet_settings_build_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a node without [fleet] must not build a Redis client")

    monkeypatch.setattr("coredis.Redis.from_url", refuse)
    async with trio.open_nursery() as nursery:
        assert await start_fleet(nursery, None, FakeNode().view()) is None


def test_entries_round_trip_through_json() -> None:
    entry = NodeEntry("n", "eu", ("turn:a",), True, False, 2, 8.0, 0.5, 1.0)
    assert NodeEntry.from_json(entry.to_json()) == entry


def test_the_entry_says_overloaded_at_the_configured_limit() -> None:
    settings = FleetSettings(redis_url="redis://127.0.0.1", node_id="n", max_allocations=3)
    node = FakeNode(allocations=2)
    registry = NodeRegistry(RedisStore(settings), settings, node.view())
    entry = registry.entry()
    assert not entry.overloaded and entry.available
    node.allocations = 3
    entry = registry.entry()
    assert entry.overloaded and not entry.available
    assert NodeEntry.from_json(entry.to_json()) == entry
    node.allocations, node.draining = 0, True
    assert not registry.entry().available
