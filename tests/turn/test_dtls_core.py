"""The core with DTLS clients (RFC 7350): an allocation ends with its association, unless it
is mobile (RFC 8016: a client that moves leaves its old association behind); ChannelData
to a DTLS client is not padded; mobility is offered over DTLS."""

from __future__ import annotations

import dataclasses

from tests.helpers.turn_harness import Client, assert_success, make_server
from trelay.node.mobility_tickets import SealedTickets
from trelay.stun.attributes import Lifetime, MobilityTicket
from trelay.stun.codes import Method
from trelay.stun.integrity import encode_signed
from trelay.turn.actions import AllocationEnded, AllocationMoved, CloseRelay
from trelay.turn.addressing import ClientTransport
from trelay.turn.data_path import peer_datagram

DTLS = ClientTransport.DTLS
PEER = ("8.8.4.4", 4000)
HOME = ("203.0.113.5", 50000)
AWAY = ("192.0.2.77", 61000)


def test_a_dtls_allocation_ends_with_its_association() -> None:
    server = make_server()
    client = Client(server, now=10, transport=DTLS)
    assert_success(client, client.allocate())
    allocation = server.allocations[client.five_tuple]
    actions = server.connection_closed(client.five_tuple)
    assert CloseRelay(allocation.relayed) in actions
    assert any(isinstance(a, AllocationEnded) for a in actions)
    assert not server.allocations


def test_a_mobile_dtls_allocation_outlives_its_association_and_moves() -> None:
    server = make_server(tickets=SealedTickets(b"k" * 32))
    home = Client(server, address=HOME, now=10, transport=DTLS, retry_stale=True)
    reply = home.allocate(MobilityTicket(b""))
    assert_success(home, reply)
    ticket = reply.get(MobilityTicket)
    assert ticket is not None and ticket.value
    allocation = server.allocations[home.five_tuple]
    # The client closes its association (close_notify) before it refreshes from the new one.
    assert server.connection_closed(home.five_tuple) == []
    assert server.allocations[home.five_tuple] is allocation
    away = dataclasses.replace(home, address=AWAY, nonce=None, opens=[])
    away.authenticate()
    request = away.request(Method.REFRESH, Lifetime(600), MobilityTicket(ticket.value))
    actions = away.send_raw(encode_signed(request, away.key))
    assert_success(away, away.response(actions, request))
    assert AllocationMoved(home.five_tuple, away.five_tuple, allocation.relayed) in actions
    # Its new association ends it as any other (it is still mobile: it would wait again).
    assert server.connection_closed(away.five_tuple) == []
    assert server.allocations[away.five_tuple] is allocation


def test_channel_data_to_a_dtls_client_is_not_padded() -> None:
    server = make_server()
    client = Client(server, now=10, transport=DTLS)
    assert_success(client, client.allocate())
    assert_success(client, client.bind(0x4001, PEER))
    allocation = server.allocations[client.five_tuple]
    framed = peer_datagram(allocation, PEER, b"abc")
    assert framed == b"\x40\x01\x00\x03abc"
