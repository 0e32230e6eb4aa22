"""Bandwidth limits on a real node (`trelay.turn.bandwidth` through `trelay.node.data_path`):
a client sending above its allocation's limit, a peer sending above it, two allocations
of one identity sharing its bucket, the node total, no limit (nothing dropped, no
meter), a reload changing a limit, and an RFC 6062 splice waiting rather than dropping.

No timing threshold: what passed is checked against `rate * t + burst` with `t` the
test's own measure around the whole exchange (at least the node's), and at least the
burst passes whatever the machine's speed (a full bucket takes it at once)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.helpers.raw_peer import address, raw_peer
from tests.helpers.turn_client import LocalNode, TurnClient, udp_client
from tests.helpers.turn_client import start_node as start_local_node
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.node.assembly import start_node
from trelay.node.data_path import RelaySenders, TransportCounters
from trelay.node.live_settings import apply_live
from trelay.node.tcp_relay import _pump
from trelay.turn.addressing import Address
from trelay.turn.bandwidth import BandwidthLimits, Bucket, Meter, Rate
from trelay.turn.config import TurnConfig
from trelay.turn.stats import Drop

TIMEOUT = 10.0
SIZE = 1000
RATE = Rate(2000, 5000)  # 5 datagrams at once, then 2 a second
CHANNEL = 0x4000


def drain(sock: socket.socket) -> list[bytes]:
    """Everything queued on `sock` now (loopback: a datagram sent is queued at once)."""
    got: list[bytes] = []
    for _ in range(100_000):
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            return got
    raise AssertionError("more than 100,000 datagrams queued")


def node_with(limits: BandwidthLimits) -> TurnConfig:
    return TurnConfig(realm="interop.test", relay_host="127.0.0.1", bandwidth=limits)


def bandwidth_drops(local: LocalNode) -> dict[Drop, int]:
    dropped = local.node.counters.dropped
    return {d: dropped[d] for d in (Drop.BANDWIDTH_ALLOCATION, Drop.BANDWIDTH_IDENTITY,
                                    Drop.BANDWIDTH_NODE)}  # fmt: skip


async def settled(local: LocalNode, expected: int, *, to_peer: bool = True) -> None:
    """Until the node has relayed or dropped `expected` datagrams (client to peer, or
    peer to client); at most TIMEOUT seconds."""
    counters = local.node.counters
    with trio.fail_after(TIMEOUT):
        for _ in range(100_000):  # bounded; the deadline comes first
            relayed = (
                counters.client_to_peer_datagrams if to_peer else counters.peer_to_client_datagrams
            )
            if relayed + sum(bandwidth_drops(local).values()) >= expected:
                return
            await trio.sleep(0.01)
    raise AssertionError("the node never processed them all")


async def bound_channel(client: TurnClient, far: socket.socket) -> Address:
    relayed = await client.allocate()
    await client.channel_bind(CHANNEL, address(far))
    return relayed


async def two_bursts(local: LocalNode, each: int) -> tuple[int, float]:
    """Two allocations (one identity, alice) on channels to one peer each send `each`
    datagrams at once; what reached the peer, and the seconds it took the node."""
    async with (
        udp_client(local.udp) as first,
        udp_client(local.udp) as second,
        raw_peer() as far,
    ):
        await bound_channel(first, far)
        await bound_channel(second, far)
        start = time.monotonic()
        burst(first, local.udp, each)
        burst(second, local.udp, each)
        await settled(local, 2 * each)
        elapsed = time.monotonic() - start
        return len(drain(far)), elapsed


def assert_within_rate(delivered: int, elapsed: float) -> None:
    """At most RATE over `elapsed` plus the burst passed, and at least the full bucket's burst."""
    assert delivered * SIZE <= RATE.bytes_per_second * elapsed + RATE.burst
    assert delivered >= RATE.burst // SIZE


def burst(client: TurnClient, server: Address, count: int) -> None:
    """`count` ChannelData datagrams of SIZE from the client's socket, no checkpoint."""
    raw: socket.socket = client.transport.raw  # type: ignore[union-attr]
    frame = client.session.channel_data(CHANNEL, b"x" * SIZE)
    for _ in range(count):
        raw.sendto(frame, server)


async def test_a_client_over_its_allocation_limit_is_dropped_and_counted() -> None:
    sent = 40
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(per_allocation=RATE)))
        async with udp_client(local.udp) as client, raw_peer() as far:
            await bound_channel(client, far)
            start = time.monotonic()
            burst(client, local.udp, sent)
            await settled(local, sent)
            elapsed = time.monotonic() - start
            got = drain(far)
        delivered = len(got)
        assert_within_rate(delivered, elapsed)
        assert local.node.counters.client_to_peer_datagrams == delivered
        assert bandwidth_drops(local) == {
            Drop.BANDWIDTH_ALLOCATION: sent - delivered, Drop.BANDWIDTH_IDENTITY: 0,
            Drop.BANDWIDTH_NODE: 0,
        }  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_a_peer_over_the_limit_is_dropped_towards_the_client() -> None:
    sent = 30
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(per_allocation=RATE)))
        async with udp_client(local.udp) as client, raw_peer() as far:
            relayed = await bound_channel(client, far)
            start = time.monotonic()
            for _ in range(sent):
                far.sendto(b"y" * SIZE, relayed)
            counters = local.node.counters
            await settled(local, sent, to_peer=False)
            elapsed = time.monotonic() - start
            delivered = counters.peer_to_client_datagrams
            for _ in range(delivered):
                assert await client.receive_data() == (CHANNEL, b"y" * SIZE)
        assert_within_rate(delivered, elapsed)
        assert bandwidth_drops(local)[Drop.BANDWIDTH_ALLOCATION] == sent - delivered
        nursery.cancel_scope.cancel()


async def test_two_allocations_of_one_identity_share_its_bucket() -> None:
    each = 20
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(per_identity=RATE)))
        delivered, elapsed = await two_bursts(local, each)
        assert local.node.bandwidth.identities() == 1
        # Together within one identity's rate: not twice it.
        assert_within_rate(delivered, elapsed)
        assert bandwidth_drops(local)[Drop.BANDWIDTH_IDENTITY] == 2 * each - delivered
        nursery.cancel_scope.cancel()


async def test_the_node_total_is_shared_by_every_allocation() -> None:
    each = 20
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(node_total=RATE)))
        delivered, elapsed = await two_bursts(local, each)
        assert_within_rate(delivered, elapsed)
        assert bandwidth_drops(local)[Drop.BANDWIDTH_NODE] == 2 * each - delivered
        nursery.cancel_scope.cancel()


async def test_without_a_limit_nothing_is_dropped_and_no_meter_is_held() -> None:
    sent = 40
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery)
        async with udp_client(local.udp) as client, raw_peer() as far:
            await bound_channel(client, far)
            senders = next(iter(local.node.server.by_relayed.values())).runtime
            assert isinstance(senders, RelaySenders) and senders.meter is None
            burst(client, local.udp, sent)
            await settled(local, sent)
            assert len(drain(far)) == sent
        assert not any(bandwidth_drops(local).values())
        nursery.cancel_scope.cancel()


async def test_a_reload_changes_the_limit_of_live_allocations() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(per_allocation=RATE)))
        async with udp_client(local.udp) as client, raw_peer() as far:
            await bound_channel(client, far)
            senders = next(iter(local.node.server.by_relayed.values())).runtime
            assert isinstance(senders, RelaySenders) and senders.meter is not None
            # Lifted: no meter, everything passes.
            local.node.use_bandwidth(BandwidthLimits())
            assert senders.meter is None
            burst(client, local.udp, 30)
            await settled(local, 30)
            assert len(drain(far)) == 30
            assert not any(bandwidth_drops(local).values())
            # Set again, lower: a full bucket of the new burst, then drops.
            low = Rate(1000, 3000)
            local.node.use_bandwidth(BandwidthLimits(per_allocation=low))
            assert local.node.server.config.bandwidth == BandwidthLimits(per_allocation=low)
            start = time.monotonic()
            burst(client, local.udp, 30)
            await settled(local, 60)
            elapsed = time.monotonic() - start
            delivered = len(drain(far))
        assert delivered >= 3
        assert delivered * SIZE <= low.bytes_per_second * elapsed + low.burst
        assert bandwidth_drops(local)[Drop.BANDWIDTH_ALLOCATION] == 30 - delivered
        nursery.cancel_scope.cancel()


async def test_an_allocation_ended_takes_its_meter_and_identity_bucket() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_local_node(nursery, node_with(BandwidthLimits(per_identity=RATE)))
        async with udp_client(local.udp) as client, raw_peer() as far:
            await bound_channel(client, far)
            assert len(local.node.bandwidth) == 1
            await client.refresh(0)
            assert len(local.node.bandwidth) == 0
            assert local.node.bandwidth.identities() == 0
        nursery.cancel_scope.cancel()


async def test_a_splice_waits_for_the_bucket_instead_of_dropping() -> None:
    """RFC 6062: TCP bytes cannot be dropped; the pump waits before sending each chunk."""
    rate = Rate(100_000, 10_000)
    senders = RelaySenders(lambda data, peer: 0)
    senders.meter = Meter((Bucket(rate, Drop.BANDWIDTH_ALLOCATION),))
    source_in, source_out = trio.testing.lockstep_stream_pair()
    sink_in, sink_out = trio.testing.lockstep_stream_pair()
    pieces, piece = 10, b"z" * 5000
    received = bytearray()

    async def write() -> None:
        for _ in range(pieces):
            await source_in.send_all(piece)
        await source_in.aclose()

    async def read() -> None:
        while chunk := await sink_out.receive_some(65536):
            received.extend(chunk)

    start = time.monotonic()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(read)
            done = trio.CancelScope()
            with done:
                await _pump(source_out, sink_in, TransportCounters(), senders, True, done)
            await sink_in.aclose()
    elapsed = time.monotonic() - start
    assert bytes(received) == piece * pieces  # nothing dropped
    assert len(received) <= rate.bytes_per_second * elapsed + rate.burst
    assert senders.client_to_peer_bytes == len(received)


SETTINGS = """
[listen]
udp = ["127.0.0.1:0"]
[auth]
realm = "interop.test"
users = {{ alice = "wonderland" }}
[relay]
allow_loopback_peers = true
[bandwidth]
{bandwidth}
"""


async def test_apply_live_retunes_the_meters_of_live_allocations(tmp_path: Path) -> None:
    path = tmp_path / "trelay.toml"
    before = SETTINGS.format(bandwidth="per_allocation = 2000\nper_allocation_burst = 5000")
    after = SETTINGS.format(bandwidth="per_allocation = 1000000\nnode_total = 4000000")
    path.write_text(before)
    current = load_settings(path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            running = await start_node(nursery, current)
        (udp,) = running.bound.udp
        async with udp_client(udp) as client, raw_peer() as far:
            await bound_channel(client, far)
            senders = next(iter(running.node.server.by_relayed.values())).runtime
            assert isinstance(senders, RelaySenders) and senders.meter is not None
            assert len(senders.meter.buckets) == 1
            path.write_text(after)
            reload = reload_settings(current, path, Flags())
            assert isinstance(reload, Reload)
            applied = apply_live(running, reload)
            assert "bandwidth.per_allocation: 2000.0 -> 1000000.0" in applied.changed
            assert running.node.bandwidth.limits == reload.settings.bandwidth.limits()
            # The allocation's own bucket, retuned, and the node's, new.
            assert len(senders.meter.buckets) == 2
            own, node = senders.meter.buckets
            assert own.tolerance == pytest.approx(1.0)  # one second of the new rate
            assert node.refusal is Drop.BANDWIDTH_NODE
        nursery.cancel_scope.cancel()
