"""Batched sends on a real node (`trelay.node.data_path` with `trelay.node.gso`): bursts of
ChannelData both ways arrive whole and in order, a Data indication keeps its place
between runs, every datagram is counted, and with GSO failing on the node's sockets
(forced with SO_NO_CHECK, which makes the kernel refuse UDP_SEGMENT) the same bursts
still arrive whole: the fallback is counted once per socket and nothing is lost."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.helpers.raw_peer import address, raw_peer
from tests.helpers.turn_client import LocalNode, TurnClient, start_node, udp_client
from trelay.node import gso
from trelay.ops.metrics import snapshot
from trelay.turn.addressing import Address

pytestmark = pytest.mark.skipif(not gso.GSO_ENABLED, reason="Linux UDP GSO only")

SO_NO_CHECK = 11
TIMEOUT = 10.0


async def receive(sock: socket.socket) -> tuple[bytes, Address]:
    with trio.fail_after(TIMEOUT):
        await trio.lowlevel.wait_readable(sock)
    data, source = sock.recvfrom(65535)
    return data, (source[0], source[1])


def client_burst(client: TurnClient, server: Address, payloads: list[bytes]) -> None:
    raw: socket.socket = client.transport.raw  # type: ignore[union-attr]
    for payload in payloads:
        raw.sendto(client.session.channel_data(0x4000, payload), server)


def burst(sizes: list[int], tag: int) -> list[bytes]:
    return [bytes([tag + index]) * size for index, size in enumerate(sizes)]


async def relay_bursts_both_ways(local: LocalNode) -> None:
    """A channel to a peer, then bursts each way; everything arrives in order."""
    async with udp_client(local.udp) as client, raw_peer() as far:
        relayed = await client.allocate()
        await client.channel_bind(0x4000, address(far))
        await client.send_channel_data(0x4000, b"first")  # connects the channel's socket
        assert await receive(far) == (b"first", relayed)
        to_peer = burst([200] * 10 + [100] + [200] * 3, 1)
        client_burst(client, local.udp, to_peer)
        for payload in to_peer:
            assert await receive(far) == (payload, relayed)
        to_client = burst([300] * 12 + [50] + [300] * 4, 100)
        for payload in to_client:
            far.sendto(payload, relayed)
        for payload in to_client:
            assert await client.receive_data() == (0x4000, payload)
        counted = local.node.counters
        assert counted.client_to_peer_datagrams == 1 + len(to_peer)
        assert counted.client_to_peer_bytes == 5 + sum(map(len, to_peer))
        assert counted.peer_to_client_datagrams == len(to_client)
        assert counted.peer_to_client_bytes == sum(map(len, to_client))


async def test_bursts_relay_whole_and_in_order_both_ways_in_gso_runs() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        await relay_bursts_both_ways(local)
        counters = local.node.counters.gso
        # A burst is queued before the node reads it: its runs left with GSO.
        assert counters.runs >= 2
        assert counters.segments >= 4
        assert counters.fallbacks == 0
        scraped = snapshot(local.node)
        assert scraped.gso_sends == {(): counters.runs}
        assert scraped.gso_datagrams == {(): counters.segments}
        assert scraped.gso_fallbacks == {(): 0}
        nursery.cancel_scope.cancel()


async def test_with_gso_failing_on_every_socket_the_bursts_still_arrive_whole() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        for sock in local.node.udp_sockets.values():
            sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        real_bind = socket.socket.bind

        def bind_without_checksums(sock: socket.socket, where: Address) -> None:
            if sock.type == socket.SOCK_DGRAM:  # relay and channel sockets
                sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            real_bind(sock, where)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(socket.socket, "bind", bind_without_checksums)
            await relay_bursts_both_ways(local)
        counters = local.node.counters.gso
        assert counters.runs == 0
        # The channel's connected socket (client -> peer) and the listener (peer ->
        # client) each fell back, once.
        assert counters.fallbacks == 2
        assert snapshot(local.node).gso_fallbacks == {(): 2}
        assert not any(dropped for dropped in local.node.counters.dropped.values())
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def channel_and_permission(
    local: LocalNode,
) -> AsyncIterator[tuple[TurnClient, Address, socket.socket, socket.socket]]:
    """A client's allocation (its relayed address) with channel 0x4000 bound to one raw
    peer (`far`) and a permission alone for another (`other`)."""
    async with udp_client(local.udp) as client, raw_peer() as far, raw_peer() as other:
        relayed = await client.allocate()
        await client.channel_bind(0x4000, address(far))
        await client.create_permission(address(other))
        yield client, relayed, far, other


async def test_a_data_indication_keeps_its_place_between_runs() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with channel_and_permission(local) as (client, relayed, far, other):
            # The client never sends on the channel: the peer's datagrams reach the
            # relay socket, where the other peer's become Data indications.
            sent: list[tuple[socket.socket, bytes]] = [
                *((far, b"a%d" % index * 40) for index in range(3)),
                (other, b"indicated"),
                *((far, b"b%d" % index * 40) for index in range(3)),
            ]
            for sock, payload in sent:
                sock.sendto(payload, relayed)
            for sock, payload in sent:
                expected = 0x4000 if sock is far else address(other)
                assert await client.receive_data() == (expected, payload)
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not gso.GRO_ENABLED, reason="TRELAY_GRO=0 turns GRO off for the run")
async def test_a_peer_run_coalesced_by_gro_reaches_the_client_datagram_by_datagram() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with channel_and_permission(local) as (client, relayed, far, other):
            # A busy batch first: the relay socket turns UDP_GRO on.
            warm_up = [b"w%02d" % index for index in range(gso.GRO_BUSY)]
            for payload in warm_up:
                far.sendto(payload, relayed)
            for payload in warm_up:
                assert await client.receive_data() == (0x4000, payload)
            relay = local.node._relays[relayed]
            assert relay.gro[relay.sock.fileno()].on
            # One GSO send each: the relay socket receives each as one buffer with the
            # segment size; the last datagram of each is shorter.
            channel_run = [b"%02d" % index * 100 for index in range(5)] + [b"end"]
            far.sendmsg([b"".join(channel_run)], gso.segment_control(200), 0, relayed)
            for payload in channel_run:
                assert await client.receive_data() == (0x4000, payload)
            indicated = [b"x" * 30, b"y" * 30, b"z" * 7]
            other.sendmsg([b"".join(indicated)], gso.segment_control(30), 0, relayed)
            for payload in indicated:
                assert await client.receive_data() == (address(other), payload)
        counted = local.node.counters
        everything = warm_up + channel_run + indicated
        assert counted.peer_to_client_datagrams == len(everything)
        assert counted.peer_to_client_bytes == sum(map(len, everything))
        nursery.cancel_scope.cancel()
