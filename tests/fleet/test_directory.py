"""The node directory (`trelay.fleet.directory`) on a real redis-server: one read shared by
concurrent requests, at most one per refresh interval, the last listing while Redis is
away (up to the TTL), then None, logged once each way."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.helpers.fleet_store import new_store
from tests.helpers.redis_server import RedisServer
from trelay.fleet.directory import NodeDirectory
from trelay.fleet.registry import INDEX_KEY, NodeEntry, node_key
from trelay.fleet.store import RedisStore

TTL = 15.0
WAIT = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(node_id: str, *, draining: bool = False) -> NodeEntry:
    return NodeEntry(
        node_id=node_id, region="eu", public_uris=(f"turn:{node_id}:3478?transport=udp",),
        ready=True, draining=draining, allocations=0, relayed_bps=0.0, cpu_share=0.0,
        updated_at=0.0,
    )  # fmt: skip


async def publish(store: RedisStore, node: NodeEntry, ttl: float = 60.0) -> None:
    """Write an entry as the registry's heartbeat does (`NodeRegistry.publish`)."""
    await store.call(lambda c: c.set(node_key(node.node_id), node.to_json(), px=int(ttl * 1000)))
    expires = store.wall_clock() + ttl
    await store.call(lambda c: c.zadd(INDEX_KEY, {node.node_id: expires}))


@asynccontextmanager
async def directory_on(
    server: RedisServer, clock: Clock, *, wait: float = 1.0
) -> AsyncIterator[tuple[RedisStore, NodeDirectory]]:
    store = new_store(server)
    directory = NodeDirectory(store, TTL, refresh_seconds=1.0, wait_seconds=wait, clock=clock)
    async with store.opened(), trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await store.wait_connected()
        await nursery.start(directory.run)
        yield store, directory
        nursery.cancel_scope.cancel()


async def test_concurrent_requests_share_one_read_and_reads_are_rate_limited(
    redis_server: RedisServer,
) -> None:
    clock = Clock()
    async with directory_on(redis_server, clock) as (store, directory):
        await publish(store, entry("a"))
        answers: list[tuple[str, ...]] = []

        async def ask() -> None:
            listing = await directory.listing()
            assert listing is not None
            answers.append(tuple(n.node_id for n in listing.nodes))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(ask)
        assert answers == [("a",)] * 20
        assert directory.reads == 1
        # Within the refresh interval: the cache, even though Redis changed.
        await publish(store, entry("b"))
        clock.now += 0.5
        listing = await directory.listing()
        assert listing is not None and [n.node_id for n in listing.nodes] == ["a"]
        assert directory.reads == 1
        # Past it: one more read, which sees the change.
        clock.now += 0.6
        listing = await directory.listing()
        assert listing is not None and [n.node_id for n in listing.nodes] == ["a", "b"]
        assert directory.reads == 2


async def test_a_draining_entry_is_listed_as_draining_at_the_next_refresh(
    redis_server: RedisServer,
) -> None:
    clock = Clock()
    async with directory_on(redis_server, clock) as (store, directory):
        await publish(store, entry("a"))
        first = await directory.listing()
        assert first is not None and first.nodes[0].available
        await publish(store, entry("a", draining=True))
        clock.now += 1.0
        second = await directory.listing()
        assert second is not None and not second.nodes[0].available


async def test_without_redis_the_last_listing_serves_up_to_the_ttl_then_none(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trelay.fleet.directory")
    clock = Clock()
    async with directory_on(redis_server, clock) as (store, directory):
        await publish(store, entry("a"))
        assert await directory.listing() is not None
        redis_server.stop()
        clock.now += TTL - 1
        kept = await directory.listing()
        assert kept is not None and [n.node_id for n in kept.nodes] == ["a"]
        clock.now += 2
        assert await directory.listing() is None
        clock.now += 2
        assert await directory.listing() is None
        stale = [r for r in caplog.records if "static ICE URIs" in r.getMessage()]
        assert len(stale) == 1
        redis_server.start()
        with trio.fail_after(WAIT):
            await store.wait_connected()
        await publish(store, entry("a"))  # a Redis without persistence comes back empty
        clock.now += 2
        back = await directory.listing()
        assert back is not None and [n.node_id for n in back.nodes] == ["a"]
        assert sum("placement is back" in r.getMessage() for r in caplog.records) == 1


async def test_a_request_waits_at_most_the_bound(redis_server: RedisServer) -> None:
    clock = Clock()
    async with directory_on(redis_server, clock, wait=0.2) as (store, directory):
        await publish(store, entry("a"))
        assert await directory.listing() is not None
        # Redis stops answering without closing connections (SIGSTOP): the read hangs
        # until the store's call timeout; the request does not.
        process = redis_server.process
        assert process is not None
        process.send_signal(19)  # SIGSTOP
        try:
            clock.now += 1.0
            with trio.fail_after(0.9):  # the store's timeout is 1 s; the directory's bound 0.2
                listing = await directory.listing()
            assert listing is not None and [n.node_id for n in listing.nodes] == ["a"]
        finally:
            process.send_signal(18)  # SIGCONT
