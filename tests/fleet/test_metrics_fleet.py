"""The metrics of the fleet's moving parts on a real redis-server: an overloaded node's
`trelay_fleet_redirecting` and its 300s; usage records to the stream, queued while Redis
is away, to the log once the queue is full, streamed again when it is back; the token
API's fallbacks to its static list; and the supervisor of `trelay serve --workers 2`
summing its workers' records and serving the revocations of both sources."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from tests.helpers.overflow_nodes import allocate_reply, eventually, rest_login, start_node_in_fleet
from tests.helpers.redis_server import RedisServer
from tests.helpers.scrape import scrape, value
from tests.helpers.supervised import poll_until, running_workers, total
from tests.helpers.turn_client import TurnClient, start_node, udp_client
from trelay.config.fleet_settings import FleetSettings
from trelay.config.settings import Settings
from trelay.config.usage_settings import UsageSettings
from trelay.fleet.directory import NodeDirectory
from trelay.fleet.registry import INDEX_KEY, NodeEntry, node_key
from trelay.fleet.revocations import RedisRevocationWriter
from trelay.fleet.store import RedisStore
from trelay.fleet.usage_stream import run_usage_stream
from trelay.node.assembly import RunningNode
from trelay.node.listeners import BoundAddresses
from trelay.ops.metrics import PlacementCollector, node_registry
from trelay.stun.error_attributes import ErrorCodeAttribute

WAIT = 20.0
MAX_CLIENTS = 32  # until both workers hold allocations (the kernel picks by hash)


async def test_an_overloaded_node_says_it_redirects_and_counts_its_300s(
    redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a", max_allocations=1)
        await start_node_in_fleet(nursery, redis_server.url, "b")
        registry = node_registry(a.running.node, ready=lambda: True, process=False)
        assert value(scrape(registry), "trelay_fleet_redirecting") == 0
        async with udp_client(a.udp) as alice:
            alice.username, alice.password = rest_login("alice")
            await alice.allocate()  # A at its limit: its overflow picks B
            await eventually(lambda: bool(a.overflow.chosen))
            assert value(scrape(registry), "trelay_fleet_redirecting") == 1
            for identity in ("bob", "carol"):
                reply = await allocate_reply(a.udp, identity)
                error = reply.get(ErrorCodeAttribute)
                assert error is not None and error.code == 300
            samples = scrape(registry)
            assert value(samples, "trelay_requests_total", method="allocate", code="300") == 2
            assert await alice.refresh(0) == 0
        await eventually(lambda: not a.overflow.chosen)
        assert value(scrape(registry), "trelay_fleet_redirecting") == 0
        nursery.cancel_scope.cancel()


async def test_usage_records_streamed_queued_then_logged_then_streamed_again(
    redis_server: RedisServer,
) -> None:
    fleet = FleetSettings(redis_url=redis_server.url, node_id="n-1", region="eu")
    settings = Settings(fleet=fleet, usage=UsageSettings(queue_max_records=3))
    store = RedisStore(fleet, call_timeout=1.0, backoff_max=0.1)
    async with trio.open_nursery() as nursery, store.opened():
        local = await start_node(nursery)
        running = RunningNode(local.node, BoundAddresses(udp=(local.udp,)), None)
        await nursery.start(run_usage_stream, store, settings, running)
        registry = node_registry(local.node, ready=lambda: True, process=False)

        def usage() -> tuple[float, float, float]:
            samples = scrape(registry)
            return (
                value(samples, "trelay_usage_records_total", sink="stream"),
                value(samples, "trelay_usage_queue_records"),
                value(samples, "trelay_usage_records_total", sink="log"),
            )

        async def one_call() -> None:
            async with udp_client(local.udp) as client:
                await client.allocate()
                assert await client.refresh(0) == 0  # its final record

        await store.wait_connected()
        await one_call()
        await eventually(lambda: usage() == (1, 0, 0))
        redis_server.stop()
        await one_call()  # its write fails: the store is lost, the record stays queued
        await eventually(lambda: not store.connected)
        for _ in range(4):  # 5 records while Redis is away: 3 queued, 2 to the log
            await one_call()
        assert usage() == (1, 3, 2)
        redis_server.start()
        await eventually(lambda: usage() == (4, 0, 2))
        nursery.cancel_scope.cancel()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_placement_fallbacks_are_counted(redis_server: RedisServer) -> None:
    ttl, clock = 15.0, Clock()
    store = RedisStore(FleetSettings(redis_url=redis_server.url), call_timeout=1.0, backoff_max=0.2)
    directory = NodeDirectory(store, ttl, wait_seconds=1.0, clock=clock)
    registry = CollectorRegistry()
    registry.register(PlacementCollector(directory))
    node = NodeEntry(
        node_id="a", region="eu", public_uris=("turn:a:3478?transport=udp",), ready=True,
        draining=False, allocations=0, relayed_bps=0.0, cpu_share=0.0, updated_at=0.0,
    )  # fmt: skip
    async with store.opened(), trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await store.wait_connected()
        await store.call(lambda c: c.set(node_key("a"), node.to_json(), px=60_000))
        await store.call(lambda c: c.zadd(INDEX_KEY, {"a": store.wall_clock() + 60}))
        await nursery.start(directory.run)
        assert await directory.listing() is not None
        assert value(scrape(registry), "trelay_placement_fallbacks_total") == 0
        redis_server.stop()
        clock.now += ttl / 2  # the last listing still serves
        assert await directory.listing() is not None
        clock.now += ttl  # older than the TTL: the static list, twice
        assert await directory.listing() is None
        clock.now += 2.0
        assert await directory.listing() is None
        assert value(scrape(registry), "trelay_placement_fallbacks_total") == 2
        nursery.cancel_scope.cancel()


def workers_config(tmp_path: Path, redis: RedisServer) -> Path:
    revoked = tmp_path / "revoked.toml"
    revoked.write_text('[[revoked]]\nidentity = "eve"\nuntil = 4000000000\n')
    path = tmp_path / "trelay.toml"
    path.write_text(
        '[listen]\nudp = ["127.0.0.1:0"]\n[http]\nlisten = ["127.0.0.1:0"]\n'
        f'[auth]\nusers = {{ alice = "wonderland" }}\nrevocations_file = "{revoked}"\n'
        f'[fleet]\nredis_url = "{redis.url}"\nnode_id = "w-node"\nregion = "eu"\n'
        "[usage]\ninterval_seconds = 3600\n"
    )
    return path


async def test_the_supervisor_sums_its_workers_records_and_serves_revocations(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    args = ("--config", str(workers_config(tmp_path, redis_server)), "--workers", "2")
    writer = RedisStore(FleetSettings(redis_url=redis_server.url))
    async with (
        writer.opened(),
        running_workers(tmp_path, *args) as node,
        AsyncExitStack() as stack,
    ):
        with trio.fail_after(WAIT):
            await writer.wait_connected()
        now = time.time()
        await RedisRevocationWriter(writer).revoke("mallory", now + 600, now)
        [udp] = node.addresses("udp")
        clients: list[TurnClient] = []
        # Allocations until both workers have served one (their reports say so).
        while len(clients) < MAX_CLIENTS:
            client = await stack.enter_async_context(udp_client(udp))
            await client.allocate()
            clients.append(client)
            samples = await node.metrics()
            per_worker = [
                total(samples, "trelay_worker_allocations_active", worker=str(index))
                for index in (0, 1)
            ]
            if all(per_worker):
                break
        assert all(per_worker), per_worker
        for client in clients:
            assert await client.refresh(0) == 0

        async def streamed_all() -> bool:
            samples = await node.metrics()
            return total(samples, "trelay_usage_records_total", sink="stream") == len(clients)

        await poll_until(streamed_all)
        samples = await node.metrics()
        assert total(samples, "trelay_usage_records_total", sink="log") == 0
        assert total(samples, "trelay_usage_queue_records") == 0
        assert total(samples, "trelay_fleet_redirecting") == 0
        assert total(samples, "trelay_placement_fallbacks_total") == 0

        async def both_sources() -> bool:
            samples = await node.metrics()
            return (
                total(samples, "trelay_revocations", source="file"),
                total(samples, "trelay_revocations", source="fleet"),
            ) == (1, 1)

        await poll_until(both_sources)
