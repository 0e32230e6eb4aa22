"""RFC 8016 mobility on a real node: a UDP client allocates with a MOBILITY-TICKET, binds a
channel, moves to a new local port, refreshes with the ticket from there, and keeps
relaying both ways through the same relayed address (its channel's connected socket and
the relay socket both deliver to the new address); the old address is left with nothing.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import trio

from tests.helpers.turn_client import (
    LOOPBACK,
    TurnClient,
    _Udp,
    peer,
    start_node,
    udp_client,
)
from trelay.config.settings import Settings, load_settings
from trelay.config.values import SettingsError
from trelay.node.mobility_tickets import SealedTickets
from trelay.node.turn_setup import build_turn_server
from trelay.ops.metrics import snapshot
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Lifetime, MobilityTicket, RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import Message
from trelay.turn.addressing import Address


def _ticket(reply: Message) -> bytes:
    ticket = reply.get(MobilityTicket)
    assert ticket is not None, reply
    return ticket.value


def _relayed(reply: Message) -> Address:
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None, reply
    return relayed.host, relayed.port


def _new_port(server: Address) -> _Udp:
    """A fresh UDP socket on loopback: the client's address after it moved."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.setblocking(False)
    raw.bind((LOOPBACK, 0))
    return _Udp(raw, server)


async def test_a_moved_client_keeps_relaying_through_its_relayed_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trelay.node.turn_node")
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        server = local.node.server
        async with udp_client(local.udp) as client, peer() as far, peer() as other:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(17), MobilityTicket(b"")
            )
            relayed, ticket = _relayed(reply), _ticket(reply)
            await client.channel_bind(0x4001, far.address)
            await client.create_permission(other.address)
            for data in (b"first", b"second"):  # the second leaves by the connected socket
                await client.send_channel_data(0x4001, data)
                assert await far.receive() == (data, relayed)
            home = client.transport
            assert isinstance(home, _Udp)
            # The client's address changes: a new local port, the same session.
            client.transport = _new_port(local.udp)
            moved = await client.checked(Method.REFRESH, Lifetime(600), MobilityTicket(ticket))
            assert _ticket(moved) != ticket
            assert [a.five_tuple.client for a in server.allocations.values()] == [client.local]
            assert snapshot(local.node).allocations_moved[("udp",)] == 1
            # Client -> peer from the new address, on the channel bound before the move.
            await client.send_channel_data(0x4001, b"after the move")
            assert await far.receive() == (b"after the move", relayed)
            # Peer -> client: the channel's connected socket and the relay socket (a Data
            # indication from the other peer) deliver to the new address.
            await far.send(relayed, b"back on the channel")
            assert await client.receive_data() == (0x4001, b"back on the channel")
            await other.send(relayed, b"back as an indication")
            assert await client.receive_data() == (other.address, b"back as an indication")
            assert home.discard() == 0, "the old address still got relayed data"
            # The old 5-tuple holds no allocation any more.
            stray = TurnClient(home)
            answer = await stray.request(Method.REFRESH, Lifetime(600))
            code = answer.get(ErrorCodeAttribute)
            assert code is not None and code.code == 437
            await home.aclose()
        nursery.cancel_scope.cancel()
    [line] = [r for r in caplog.records if r.getMessage() == "allocation moved"]
    assert getattr(line, "relayed", None) == relayed


async def test_a_ticket_alone_moves_nothing_without_credentials() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as client:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(17), MobilityTicket(b"")
            )
            thief = TurnClient(_new_port(local.udp), username="mallory", password="x")
            try:
                answer = await thief.request(Method.REFRESH, MobilityTicket(_ticket(reply)))
                code = answer.get(ErrorCodeAttribute)
                assert code is not None and code.code == 401  # not even a user here
            finally:
                await thief.aclose()
            assert [a.five_tuple.client for a in local.node.server.allocations.values()] == [
                client.local
            ]
        nursery.cancel_scope.cancel()


def test_relay_mobility_is_the_switch(tmp_path: Path) -> None:
    """`[relay] mobility` (default true): off, the core has no ticket codec (405)."""
    assert isinstance(build_turn_server(Settings()).tickets, SealedTickets)
    config = tmp_path / "trelay.toml"
    config.write_text("[relay]\nmobility = false\n")
    assert build_turn_server(load_settings(config)).tickets is None
    config.write_text('[relay]\nmobility = "yes"\n')
    with pytest.raises(SettingsError, match=r"relay\.mobility"):
        load_settings(config)
