"""Usage records on a real node (loopback sockets): each allocation's records are deltas
over back-to-back intervals that sum to what its relay counted, and every way an
allocation ends gives it exactly one final record (`trelay.node.usage`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import (
    LocalNode,
    TurnClient,
    peer,
    start_node,
    tcp_client,
    udp_client,
)
from trelay.node.sessions import Traffic
from trelay.node.turn_node import DrainEnd
from trelay.node.usage import UsageRecord


class Captured:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.final_written = trio.Event()

    def write(self, record: UsageRecord) -> None:
        self.records.append(record)
        if record.final:
            self.final_written.set()

    def finals(self) -> list[UsageRecord]:
        return [r for r in self.records if r.final]


def summed(records: list[UsageRecord]) -> Traffic:
    return Traffic(
        sum(r.client_to_peer_datagrams for r in records),
        sum(r.client_to_peer_bytes for r in records),
        sum(r.peer_to_client_datagrams for r in records),
        sum(r.peer_to_client_bytes for r in records),
    )


def capture(local: LocalNode) -> Captured:
    sink = Captured()
    local.node.usage.sink = sink
    return sink


async def test_records_are_deltas_that_sum_to_the_sessions_traffic() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        sink = capture(local)
        node = local.node
        async with udp_client(local.udp) as alice, peer() as far:
            relayed = await alice.allocate()
            await alice.channel_bind(0x4000, far.address)
            for round_ in range(3):
                for i in range(round_ + 2):
                    payload = b"x" * (10 * (i + 1) + round_)
                    await alice.send_channel_data(0x4000, payload)
                    assert await far.receive() == (payload, relayed)
                    await far.send(relayed, payload + b"!")
                    assert await alice.receive_data() == (0x4000, payload + b"!")
                assert await node.usage.meter_pass() == 1
            [session] = node.sessions()
            assert await alice.refresh(0) == 0
        nursery.cancel_scope.cancel()
    records = sink.records
    assert [r.seq for r in records] == [0, 1, 2, 3]
    assert [r.final for r in records] == [False, False, False, True]
    assert len({r.allocation for r in records}) == 1
    assert summed(records) == session.traffic != Traffic()
    assert summed(records[:1]) == Traffic(2, 10 + 20, 2, 11 + 21)
    assert records[-1].client_to_peer_datagrams == 0  # nothing relayed after the last pass
    for before, after in itertools.pairwise(records):
        assert before.end == after.start  # back to back: nothing counted twice or lost
    first = records[0]
    assert (first.identity, first.transport, first.family) == ("alice", "udp", "ipv4")
    assert (first.node, first.region) == (None, None)  # a node alone
    assert all(r.allocation_seconds >= 0 for r in records)


async def end_by_refresh_0(local: LocalNode, client: TurnClient) -> None:
    assert await client.refresh(0) == 0


async def end_by_operator(local: LocalNode, client: TurnClient) -> None:
    assert local.node.end_sessions(identity="alice") == 1


async def end_by_drain_timeout(local: LocalNode, client: TurnClient) -> None:
    assert await local.node.drain(0) is DrainEnd.TIMEOUT


async def end_by_drain_of_the_last(local: LocalNode, client: TurnClient) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(local.node.drain, 3600)
        await trio.testing.wait_all_tasks_blocked()
        assert await client.refresh(0) == 0


EndPath = Callable[[LocalNode, TurnClient], Awaitable[None]]


@pytest.mark.parametrize(
    "end", [end_by_refresh_0, end_by_operator, end_by_drain_timeout, end_by_drain_of_the_last]
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_each_end_writes_one_final_record(end: EndPath, transport: str) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        sink = capture(local)
        client_of = udp_client(local.udp) if transport == "udp" else tcp_client(local.tcp)
        async with client_of as alice, peer() as far:
            relayed = await alice.allocate()
            await alice.channel_bind(0x4000, far.address)
            await alice.send_channel_data(0x4000, b"hello")
            assert await far.receive() == (b"hello", relayed)
            await end(local, alice)
            assert len(local.node.usage) == 0
            # Ending it again (or the node's end) writes nothing more.
            assert local.node.end_sessions(identity="alice") == 0
            local.node.usage.end_all()
        nursery.cancel_scope.cancel()
    [final] = sink.finals()
    assert sink.records == [final]
    assert final.transport == transport
    assert summed(sink.records) == Traffic(1, 5, 0, 0)


async def test_expiry_writes_the_final_record(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        sink = capture(local)
        await trio.sleep(30)  # passes at 60 s, 120 s, ...: the allocation starts between two
        async with udp_client(local.udp) as alice:
            await alice.allocate(lifetime=600)
            await trio.sleep(750)  # expired at 630 s
            assert local.node.sessions() == []
            await trio.sleep(300)  # no pass writes for it any more
        nursery.cancel_scope.cancel()
    records = sink.records
    assert [(r.seq, r.final) for r in records] == [
        (i, i == len(records) - 1) for i in range(len(records))
    ]
    assert len(records) == 11  # ten passes (60 s to 600 s), then the expiry
    assert sum(r.allocation_seconds for r in records) == pytest.approx(600, abs=1)
    assert [round(r.allocation_seconds) for r in records[1:-1]] == [60] * 9


async def test_a_closed_connection_writes_the_final_record() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        sink = capture(local)
        async with tcp_client(local.tcp) as alice:
            await alice.allocate()
        with trio.fail_after(5):
            await sink.final_written.wait()
        assert local.node.sessions() == []
        nursery.cancel_scope.cancel()
    [final] = sink.records
    assert final.final and final.transport == "tcp"


async def test_a_node_cancelled_without_shutdown_ends_its_records() -> None:
    sink = Captured()
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            local = await start_node(nursery)
            local.node.usage.sink = sink
            async with udp_client(local.udp) as alice, udp_client(local.udp) as again:
                await alice.allocate()
                await again.allocate()
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    assert [r.final for r in sink.records] == [True, True]
    assert len({r.allocation for r in sink.records}) == 2


def test_as_dict_is_what_dataclasses_asdict_gives() -> None:
    """The log line's fields (issue 13: without asdict's deep copy) are unchanged, in order."""
    record = UsageRecord(
        "a1", 3, "alice", None, "eu", "udp", "ipv4", 1.5, 2.5, 1, 100, 2, 200, 1.0, True
    )
    assert list(record.as_dict().items()) == list(dataclasses.asdict(record).items())
