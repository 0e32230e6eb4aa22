"""Usage records to the Redis stream `trelay:fleet:usage` on a real redis-server: a real
allocation's records arrive flat and sum to its traffic; the stream's length is bounded;
with Redis stopped records queue up to the bound and then go to the log (counted), and
the queue drains when Redis is back: nothing is lost."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.helpers.fleet_store import eventually, new_store
from tests.helpers.redis_server import RedisServer
from tests.helpers.turn_client import LocalNode, peer, start_node, udp_client
from trelay.config.fleet_settings import FleetSettings
from trelay.config.settings import Settings
from trelay.config.usage_settings import UsageSettings
from trelay.fleet.store import RedisStore
from trelay.fleet.usage_stream import STREAM_KEY, StreamSink, run_usage_stream
from trelay.node.assembly import RunningNode
from trelay.node.data_path import RelaySenders
from trelay.node.listeners import BoundAddresses
from trelay.node.sessions import Traffic
from trelay.node.usage import UsageRecord
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation


def fleet_settings(redis: RedisServer, **usage: int) -> Settings:
    return Settings(
        fleet=FleetSettings(redis_url=redis.url, node_id="n-1", region="eu"),
        usage=UsageSettings(**usage),  # type: ignore[arg-type]
    )


async def stream_records(store: RedisStore) -> list[UsageRecord]:
    entries = await store.call(lambda c: c.xrange(STREAM_KEY))
    return [
        UsageRecord.from_flat({str(k): str(v) for k, v in entry.field_values.items()})
        for entry in entries
    ]


async def streaming_node(
    nursery: trio.Nursery, store: RedisStore, settings: Settings, *, udp: bool = False
) -> tuple[LocalNode, StreamSink]:
    """A node in `nursery` whose usage records go to the stream through `store`."""
    local = await start_node(nursery)
    running = RunningNode(local.node, BoundAddresses(udp=(local.udp,) if udp else ()), None)
    sink = await nursery.start(run_usage_stream, store, settings, running)
    assert isinstance(sink, StreamSink) and local.node.usage.sink is sink
    return local, sink


def allocation(index: int) -> Allocation:
    five_tuple = FiveTuple(ClientTransport.UDP, ("192.0.2.1", 1000 + index), ("192.0.2.9", 3478))
    relayed = ("198.51.100.1", 20000 + index)
    return Allocation(five_tuple, relayed, relayed, "bob", "bob", b"k" * 16, 600.0)


async def test_a_real_allocations_records_reach_the_stream(redis_server: RedisServer) -> None:
    settings = fleet_settings(redis_server)
    store = new_store(redis_server, backoff_max=0.1)
    async with trio.open_nursery() as nursery, store.opened():
        local, sink = await streaming_node(nursery, store, settings, udp=True)
        local.node.usage.node_id, local.node.usage.region = "n-1", "eu"
        async with udp_client(local.udp) as alice, peer() as far:
            relayed = await alice.allocate()
            await alice.channel_bind(0x4000, far.address)
            await alice.send_channel_data(0x4000, b"to the peer")
            assert await far.receive() == (b"to the peer", relayed)
            await local.node.usage.meter_pass()
            await far.send(relayed, b"back")
            assert await alice.receive_data() == (0x4000, b"back")
            [session] = local.node.sessions()
            assert await alice.refresh(0) == 0
        await eventually(lambda: sink.streamed == 2)
        records = await stream_records(store)
        nursery.cancel_scope.cancel()
    assert [(r.seq, r.final) for r in records] == [(0, False), (1, True)]
    assert {(r.identity, r.node, r.region) for r in records} == {("alice", "n-1", "eu")}
    assert session.traffic == Traffic(1, 11, 1, 4)
    assert records[0].client_to_peer_bytes + records[1].client_to_peer_bytes == 11
    assert records[0].peer_to_client_bytes + records[1].peer_to_client_bytes == 4


async def test_the_stream_is_bounded(redis_server: RedisServer) -> None:
    settings = fleet_settings(redis_server, stream_max_entries=50)
    store = new_store(redis_server, backoff_max=0.1)
    async with trio.open_nursery() as nursery, store.opened():
        local, sink = await streaming_node(nursery, store, settings)
        recorder = local.node.usage
        for index in range(1000):
            recorder.opened(allocation(index), RelaySenders(lambda data, to: 0))
            recorder.ended(allocation(index).relayed)
        await eventually(lambda: sink.streamed == 1000)
        length = await store.call(lambda c: c.xlen(STREAM_KEY))
        nursery.cancel_scope.cancel()
    # MAXLEN ~ trims whole macro nodes (100 entries by default): near the bound, far below 1000.
    assert 50 <= length <= 250


async def test_redis_lost_queues_then_logs_then_drains(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = fleet_settings(redis_server, queue_max_records=30)
    store = new_store(redis_server, backoff_max=0.1)
    async with trio.open_nursery() as nursery, store.opened():
        local, sink = await streaming_node(nursery, store, settings)
        recorder = local.node.usage

        def end(index: int) -> None:
            recorder.opened(allocation(index), RelaySenders(lambda data, to: 0))
            recorder.ended(allocation(index).relayed)

        await store.wait_connected()
        end(0)
        await eventually(lambda: sink.streamed == 1)
        before = await stream_records(store)  # a restarted test Redis starts empty
        redis_server.stop()
        end(1)  # its write fails: the store is lost
        await eventually(lambda: not store.connected)
        for index in range(2, 51):  # 50 records in all: 30 queued, 20 to the log
            end(index)
        assert (len(sink.queue), sink.logged_instead) == (30, 20)
        redis_server.start()
        await eventually(lambda: not sink.queue)
        records = await stream_records(store)
        nursery.cancel_scope.cancel()
    logged = [r for r in caplog.records if r.name == "trelay.node.usage"]
    assert len(records) == 30 and len(logged) == 20 and sink.streamed == 31
    # Nothing lost: every record is in the stream or in the log, exactly once.
    streamed = {r.allocation for r in before + records}
    in_log = {r.__dict__["allocation"] for r in logged}
    assert len(streamed | in_log) == 51 and not streamed & in_log
    assert any("usage queue full" in r.getMessage() for r in caplog.records)


async def test_a_stopping_process_flushes_its_queue(redis_server: RedisServer) -> None:
    settings = fleet_settings(redis_server)
    store = new_store(redis_server, backoff_max=0.1)
    async with trio.open_nursery() as outer, store.opened():
        await store.wait_connected()
        async with trio.open_nursery() as nursery:
            local = await start_node(nursery)
            running = RunningNode(local.node, BoundAddresses(), None)
            await nursery.start(run_usage_stream, store, settings, running)
            recorder = local.node.usage
            for index in range(5):  # ended only as the node's scope ends
                recorder.opened(allocation(index), RelaySenders(lambda data, to: 0))
            nursery.cancel_scope.cancel()
        records = await stream_records(store)
        outer.cancel_scope.cancel()
    # Whichever task the cancellation reached first, the five final records are somewhere:
    # in the stream (flushed on the way out) or in the log (after the sink was handed back).
    assert len(records) + recorder.sink.written == 5  # type: ignore[attr-defined]
    assert all(r.final for r in records)
