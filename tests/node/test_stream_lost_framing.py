"""ChannelData on a channel not bound on a TCP connection closes it: its framing is lost.

The rule of `trelay.node.stream_listener` (issue 15, coturn's STUN length truncation
advisory): over a stream, ChannelData naming a channel the connection's allocation has
not bound (or with no allocation) is lost framing, not a late packet, and the connection
is closed at once, judged on the frame's header, without waiting for the data its length
announces; counted as `Drop.LOST_FRAMING` and `closed_lost_framing`. Over UDP the same
datagram is dropped (`Drop.NO_CHANNEL`) and the client served on. A real node on
loopback with the autojump MockClock: "at once" is "before the 30 s idle timeout".
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.helpers.stream_end import closed_by_peer
from tests.helpers.turn_client import (
    LocalNode,
    TurnClient,
    _Tcp,
    peer,
    start_node,
    tcp_client,
    udp_client,
)
from trelay.stun.codes import MessageClass
from trelay.turn.stats import Drop

CHANNEL = 0x4002
IDLE_TIMEOUT = 30.0


@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery, idle_timeout=IDLE_TIMEOUT)
        nursery.cancel_scope.cancel()


async def closed_by_server(client: TurnClient) -> bool:
    """True once the server has closed the connection (reads what is left, bounded)."""
    assert isinstance(client.transport, _Tcp)
    return await closed_by_peer(client.transport.stream, IDLE_TIMEOUT * 4)


def channel_data(channel: int, length: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", channel, length) + data


async def test_a_bound_channel_relays_and_an_unbound_one_closes_the_connection(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with peer() as other, tcp_client(local.tcp) as client:
        await client.allocate()
        await client.channel_bind(CHANNEL, other.address)
        await client.send_channel_data(CHANNEL, b"bound")
        assert (await other.receive())[0] == b"bound"
        start = trio.current_time()
        await client.send_raw(channel_data(CHANNEL + 1, 5, b"hello\x00\x00\x00"))
        assert await closed_by_server(client)
        assert trio.current_time() < start + IDLE_TIMEOUT
    await trio.sleep(1)
    assert local.node.counters.dropped[Drop.LOST_FRAMING] == 1
    assert local.node.counters.dropped[Drop.NO_CHANNEL] == 0
    assert local.tcp_stats.closed_lost_framing == 1
    # RFC 8656 §3.1: closing the connection ended the allocation.
    assert local.node.server.allocation_count == 0


@pytest.mark.parametrize(
    "allocate", [False, True], ids=["without an allocation", "with an allocation"]
)
async def test_a_channel_header_alone_closes_the_connection_without_waiting_for_its_data(
    local: LocalNode, autojump_clock: trio.testing.MockClock, allocate: bool
) -> None:
    """The coturn advisory's shape: a length 8 bytes short leaves 'xxxx' (0x7878, a
    channel in the RFC 5766 range) and a length of 30840 where a header should be."""
    async with tcp_client(local.tcp) as client:
        if allocate:
            await client.allocate()
        start = trio.current_time()
        await client.send_raw(channel_data(0x7878, 0x7878, b"xxxx"))
        assert await closed_by_server(client)
        assert trio.current_time() < start + IDLE_TIMEOUT
    assert local.node.counters.dropped[Drop.LOST_FRAMING] == 1
    assert local.tcp_stats.closed_lost_framing == 1
    assert local.tcp_stats.closed_idle == 0


async def test_a_channel_bind_and_channel_data_sent_together_are_served_in_order(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    """The ChannelBind ahead of the data in the same write binds the channel first."""
    async with peer() as other, tcp_client(local.tcp) as client:
        await client.allocate()
        bind = client.session.channel_bind(CHANNEL, other.address)
        await client.send_raw(bind.data + channel_data(CHANNEL, 4, b"data"))
        assert (await other.receive())[0] == b"data"
        reply = await client.binding()
        assert reply.message_class is MessageClass.SUCCESS
    assert local.tcp_stats.closed_lost_framing == 0


async def test_over_udp_an_unbound_channel_is_dropped_and_the_client_served_on(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    """A datagram is its own frame: ChannelData on a channel that expired a moment ago
    is a harmless race there, dropped silently as RFC 8656 §12.4 says."""
    async with udp_client(local.udp) as client:
        await client.allocate()
        await client.send_channel_data(CHANNEL, b"late")
        reply = await client.binding()
        assert reply.message_class is MessageClass.SUCCESS
        assert local.node.server.allocation_count == 1
    assert local.node.counters.dropped[Drop.NO_CHANNEL] == 1
    assert local.node.counters.dropped[Drop.LOST_FRAMING] == 0
