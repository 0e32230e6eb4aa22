"""RFC 8016 mobility over DTLS (RFC 7350) on a real node: a client allocates with a
MOBILITY-TICKET over one association, opens a new association from a new port, refreshes
there with the ticket, and relays through the same relayed address and channel both
ways; the first association's end no longer ends the allocation."""

from __future__ import annotations

from tests.helpers.dtls_client import dtls_client
from tests.helpers.dtls_node import dtls_node
from tests.helpers.turn_client import peer
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Lifetime, MobilityTicket, RequestedTransport
from trelay.stun.codes import Method
from trelay.turn.addressing import ClientTransport, FiveTuple

CHANNEL = 0x4001


async def test_a_dtls_client_moves_to_a_new_association() -> None:
    async with dtls_node() as local, peer() as far:
        server = local.node.server
        async with dtls_client(local.dtls) as first:
            reply = await first.checked(
                Method.ALLOCATE, RequestedTransport(17), MobilityTicket(b"")
            )
            relayed_attribute, ticket = reply.get(XorRelayedAddress), reply.get(MobilityTicket)
            assert relayed_attribute is not None and ticket is not None
            relayed = (relayed_attribute.host, relayed_attribute.port)
            await first.channel_bind(CHANNEL, far.address)
            async with dtls_client(local.dtls) as second:
                assert second.local != first.local
                moved = await second.checked(
                    Method.REFRESH, Lifetime(600), MobilityTicket(ticket.value)
                )
                assert moved.get(MobilityTicket) not in (None, ticket)
                [allocation] = server.allocations.values()
                assert allocation.five_tuple.transport is ClientTransport.DTLS
                assert allocation.five_tuple.client == second.local
                await second.send_channel_data(CHANNEL, b"from the new association")
                assert await far.receive() == (b"from the new association", relayed)
                await far.send(relayed, b"back")
                assert await second.receive_data() == (CHANNEL, b"back")
                # The old association ends (as its idle timeout would end it): the
                # allocation, at the new one now, lives on.
                local.node.streams[FiveTuple(ClientTransport.DTLS, first.local, local.dtls)].close()
                assert [a.relayed for a in server.allocations.values()] == [relayed]
