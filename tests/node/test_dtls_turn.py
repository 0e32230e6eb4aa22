"""TURN over DTLS on a real node (RFC 7350): Allocate, ChannelBind and ChannelData through a
relay to a loopback UDP peer and back, Send/Data indications, the allocation's transport
"dtls" in the sessions and the metrics, and the allocation ending with its association."""

from __future__ import annotations

import trio

from tests.helpers.dtls_client import DtlsTransport, dtls_client
from tests.helpers.dtls_node import dtls_node
from tests.helpers.polling import wait_until
from tests.helpers.scrape import scrape, value
from tests.helpers.turn_client import Peer, TurnClient, peer
from trelay.ops.metrics import node_registry
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.channel_data import encode_channel_data
from trelay.stun.codes import MessageClass
from trelay.turn.addressing import Address, ClientTransport

TIMEOUT = 20
CHANNEL = 0x4001


async def echo_once(relay_peer: Peer) -> Address:
    """Receive one datagram at the peer and send it back, reversed; where it came from."""
    data, source = await relay_peer.receive()
    await relay_peer.send(source, data[::-1])
    return source


async def test_allocate_and_channel_data_over_dtls_through_a_relay() -> None:
    async with dtls_node() as local, peer() as relay_peer, dtls_client(local.dtls) as client:
        reply = await client.binding()
        mapped = reply.get(XorMappedAddress)
        assert mapped is not None and mapped.address == client.local
        relayed = await client.allocate()
        await client.channel_bind(CHANNEL, relay_peer.address)
        # Client -> relay -> peer, and the peer's answer back as ChannelData.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_channel_data, CHANNEL, b"hello over dtls")
            source = await echo_once(relay_peer)
        assert source == relayed
        assert await client.receive_data() == (CHANNEL, b"sltd revo olleh")
        # An odd length: over DTLS ChannelData is not padded (RFC 8656 §12.5), either way.
        await client.send_raw(encode_channel_data(CHANNEL, b"abc", pad=False))
        assert (await relay_peer.receive())[0] == b"abc"
        await relay_peer.send(relayed, b"xyz")
        assert await _next_record(client) == encode_channel_data(CHANNEL, b"xyz", pad=False)
        # Send and Data indications work too.
        await client.send_indication(relay_peer.address, b"indicated")
        assert (await relay_peer.receive())[0] == b"indicated"
        (session,) = local.node.sessions()
        assert session.view.five_tuple.transport is ClientTransport.DTLS
        assert session.view.five_tuple.client == client.local
        registry = node_registry(local.node, ready=lambda: True, process=False)
        samples = scrape(registry)
        assert value(samples, "trelay_allocations_active", transport="dtls") == 1
        outbound = value(
            samples,
            "trelay_relayed_datagrams_total",
            direction="client_to_peer",
            transport="dtls",
        )
        assert outbound >= 2


async def _next_record(client: TurnClient) -> bytes:
    """The next raw record the client's association receives."""
    assert isinstance(client.transport, DtlsTransport)
    with trio.fail_after(TIMEOUT):
        return await client.transport.receive()


async def test_the_allocation_ends_when_its_association_is_replaced() -> None:
    async with dtls_node() as local, peer():
        async with dtls_client(local.dtls) as client:
            await client.allocate()
            port = client.local[1]
            assert len(local.node.sessions()) == 1
        # The same address starts a new handshake (a client restarting): the old
        # association is gone, and its allocation with it (RFC 8656 §3.1).
        async with dtls_client(local.dtls, port=port) as again:
            await wait_until(lambda: not local.node.sessions())
            assert local.stats.closed_broken == 1
            relayed = await again.allocate()
            (session,) = local.node.sessions()
            assert session.view.relayed == relayed


async def test_a_refresh_and_a_delete_over_dtls() -> None:
    async with dtls_node() as local, dtls_client(local.dtls) as client:
        await client.allocate()
        assert await client.refresh(300) == 300
        assert await client.refresh(0) == 0
        assert local.node.sessions() == []
        reply = await client.binding()
        assert reply.message_class is MessageClass.SUCCESS
