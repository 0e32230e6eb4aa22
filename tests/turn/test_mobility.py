"""RFC 8016 mobility in the core: tickets on Allocate and Refresh, and an allocation that
follows its client to a new 5-tuple with its relayed address, permissions and channels.

The core is driven with the node's real ticket codec (`trelay.node.mobility_tickets`).
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers.turn_harness import (
    SERVER_ADDRESS,
    Client,
    assert_error,
    assert_success,
    error_code,
    make_server,
    run_timers,
)
from trelay.node.mobility_tickets import SealedTickets
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Lifetime, MobilityTicket, RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message
from trelay.turn.actions import AllocationMoved, SendToClient
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.server import TurnServer

PEER = ("8.8.4.4", 4000)
HOME = ("203.0.113.5", 50000)
AWAY = ("192.0.2.77", 61000)


def mobile_server() -> TurnServer:
    return make_server(tickets=SealedTickets(b"k" * 32))


def ticket_of(reply: Message | None) -> bytes:
    assert reply is not None
    ticket = reply.get(MobilityTicket)
    assert ticket is not None, reply
    return ticket.value


def mobile_client(server: TurnServer, address: tuple[str, int] = HOME) -> tuple[Client, bytes]:
    """A client with a mobile allocation (a permission and channel 0x4001 to PEER)."""
    client = Client(server, address=address, now=10, retry_stale=True)
    reply = client.allocate(MobilityTicket(b""))
    assert_success(client, reply)
    assert_success(client, client.bind(0x4001, PEER))
    return client, ticket_of(reply)


def moved(client: Client, to: tuple[str, int], ticket: bytes, *, user: str = "alice") -> Client:
    """The same client (or another user) at a new address, refreshing with `ticket`."""
    away = dataclasses.replace(client, address=to, nonce=None, opens=[], username=user)
    if user != client.username:
        away.password = "hunter2"
    return away


def test_an_allocate_asking_for_mobility_gets_a_ticket_uclient_can_keep() -> None:
    server = mobile_server()
    _, ticket = mobile_client(server)
    # coturn's turnutils_uclient keeps at most 32 bytes and sends them with strlen().
    assert 0 < len(ticket) <= 32
    assert b"\x00" not in ticket
    assert server.state_sizes()["mobile_allocations"] == 1


def test_an_allocate_without_the_attribute_gets_no_ticket() -> None:
    server = mobile_server()
    client = Client(server, now=10)
    reply = client.allocate()
    assert_success(client, reply)
    assert reply.get(MobilityTicket) is None
    assert client.refresh(600).get(MobilityTicket) is None
    assert server.state_sizes()["mobile_allocations"] == 0


def test_a_ticket_with_a_value_in_an_allocate_is_400() -> None:
    client = Client(mobile_server(), now=10)
    assert_error(client, client.allocate(MobilityTicket(b"mine")), 400, signed=True)


def test_mobility_is_forbidden_without_a_codec() -> None:
    client = Client(make_server(), now=10)
    assert_error(client, client.allocate(MobilityTicket(b"")), 405, signed=True)
    assert not client.server.allocations


@pytest.mark.parametrize("transport", [ClientTransport.TCP, ClientTransport.TLS])
def test_mobility_is_forbidden_over_streams(transport: ClientTransport) -> None:
    client = Client(mobile_server(), now=10, transport=transport)
    assert_error(client, client.allocate(MobilityTicket(b"")), 405, signed=True)


def test_a_refresh_with_the_ticket_from_a_new_address_moves_the_allocation() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    allocation = server.allocations[home.five_tuple]
    relayed = allocation.relayed
    away = moved(home, AWAY, ticket)
    away.authenticate()  # its nonce is bound to its new address
    request = away.request(Method.REFRESH, Lifetime(600), MobilityTicket(ticket))
    actions = away.send_raw(encode_signed(request, away.key))
    reply = away.response(actions, request)
    assert_success(away, reply)
    assert AllocationMoved(home.five_tuple, away.five_tuple, relayed) in actions
    assert server.stats.allocations_moved[ClientTransport.UDP] == 1
    # The same allocation, at the new 5-tuple, with its relayed address, its channel and
    # its permission; the old 5-tuple holds nothing.
    assert server.allocations[away.five_tuple] is allocation
    assert home.five_tuple not in server.allocations
    assert server.client_table(ClientTransport.UDP, SERVER_ADDRESS) == {AWAY: allocation}
    assert server.by_relayed[relayed] is allocation
    assert allocation.channels == {0x4001: PEER}
    assert PEER[0] in allocation.permissions
    # The response goes to the new address, with a new ticket.
    [sent] = [a for a in actions if isinstance(a, SendToClient)]
    assert sent.five_tuple == away.five_tuple
    assert ticket_of(reply) != ticket
    # The old 5-tuple: its nonce retired (438, then the client re-challenges), then 437.
    assert error_code(home.refresh(600)) == 437
    # The new one refreshes and binds as the allocation's own.
    assert_success(away, away.refresh(600))
    assert_success(away, away.bind(0x4002, ("8.8.8.8", 4000)))


def test_the_moving_refresh_retransmitted_gets_the_same_answer() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    away = moved(home, AWAY, ticket)
    away.authenticate()
    data = encode_signed(away.request(Method.REFRESH, MobilityTicket(ticket)), away.key)
    first = [a for a in away.send_raw(data) if isinstance(a, SendToClient)]
    again = [a for a in away.send_raw(data) if isinstance(a, SendToClient)]
    assert first == again  # coturn's client sends it twice (from the response cache)
    assert away.five_tuple in server.allocations


def test_a_refresh_with_the_ticket_from_the_same_address_renews_it() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    reply = home.call(Method.REFRESH, Lifetime(600), MobilityTicket(ticket))
    assert_success(home, reply)
    renewed = ticket_of(reply)
    assert renewed != ticket
    # The old ticket is superseded: moving with it fails, with the new one succeeds.
    away = moved(home, AWAY, ticket)
    assert_error(away, away.call(Method.REFRESH, MobilityTicket(ticket)), 437, signed=True)
    assert home.five_tuple in server.allocations
    assert_success(away, away.call(Method.REFRESH, MobilityTicket(renewed)))
    assert away.five_tuple in server.allocations


def test_every_successful_refresh_of_a_mobile_allocation_carries_a_new_ticket() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    renewed = ticket_of(home.refresh(600))
    assert renewed != ticket
    away = moved(home, AWAY, renewed)
    assert_success(away, away.call(Method.REFRESH, MobilityTicket(renewed)))


def test_a_ticket_used_once_is_not_accepted_again() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    away = moved(home, AWAY, ticket)
    assert_success(away, away.call(Method.REFRESH, MobilityTicket(ticket)))
    # A replay of the used ticket, from a third address, moves nothing.
    third = moved(home, ("192.0.2.99", 1234), ticket)
    assert_error(third, third.call(Method.REFRESH, MobilityTicket(ticket)), 437, signed=True)
    assert away.five_tuple in server.allocations


def test_another_user_with_the_ticket_gets_441() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    thief = moved(home, AWAY, ticket, user="bob")
    assert_error(thief, thief.call(Method.REFRESH, MobilityTicket(ticket)), 441, signed=True)
    assert home.five_tuple in server.allocations
    assert thief.five_tuple not in server.allocations


@pytest.mark.parametrize("position", [0, 10, 21, 31])
def test_an_altered_ticket_is_437(position: int) -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    altered = bytearray(ticket)
    altered[position] = ord("A") if altered[position] != ord("A") else ord("B")
    away = moved(home, AWAY, bytes(altered))
    assert_error(away, away.call(Method.REFRESH, MobilityTicket(bytes(altered))), 437, signed=True)
    assert home.five_tuple in server.allocations


def test_a_ticket_of_another_node_key_is_437() -> None:
    server = mobile_server()
    home, _ = mobile_client(server)
    other = make_server(tickets=SealedTickets(b"o" * 32))
    _, foreign = mobile_client(other)
    away = moved(home, AWAY, foreign)
    assert_error(away, away.call(Method.REFRESH, MobilityTicket(foreign)), 437, signed=True)


def test_the_ticket_of_a_deleted_or_expired_allocation_is_437() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    assert_success(home, home.refresh(0))
    away = moved(home, AWAY, ticket)
    assert_error(away, away.call(Method.REFRESH, MobilityTicket(ticket)), 437, signed=True)
    assert server.state_sizes()["mobile_allocations"] == 0
    # Expiry: the allocation (and the ticket with it) ends after its lifetime.
    second, ticket = mobile_client(server, ("203.0.113.6", 1))
    run_timers(server, second.now + 601)
    late = moved(second, AWAY, ticket)
    late.now = second.now + 601
    assert_error(late, late.call(Method.REFRESH, MobilityTicket(ticket)), 437, signed=True)
    assert server.state_sizes()["mobile_allocations"] == 0


def test_no_move_onto_a_5_tuple_that_has_an_allocation() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    other = Client(server, address=AWAY, now=10)
    assert_success(other, other.allocate())
    away = moved(home, AWAY, ticket)
    assert_error(away, away.call(Method.REFRESH, MobilityTicket(ticket)), 437, signed=True)
    assert server.allocations[home.five_tuple].relayed != server.allocations[AWAY_5].relayed


AWAY_5 = FiveTuple(ClientTransport.UDP, AWAY, SERVER_ADDRESS)


def test_a_refresh_deleting_with_the_ticket_from_a_new_address_ends_it() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    away = moved(home, AWAY, ticket)
    reply = away.call(Method.REFRESH, Lifetime(0), MobilityTicket(ticket))
    assert_success(away, reply)
    assert reply.get(MobilityTicket) is None
    assert not server.allocations
    assert server.state_sizes()["mobile_allocations"] == 0


def test_the_relayed_address_in_the_allocate_answer_is_kept_after_moves() -> None:
    server = mobile_server()
    home, ticket = mobile_client(server)
    relayed = server.allocations[home.five_tuple].reported_relayed
    client = home
    for step in range(3):
        client = moved(client, ("192.0.2.50", 7000 + step), ticket)
        reply = client.call(Method.REFRESH, MobilityTicket(ticket))
        assert_success(client, reply)
        ticket = ticket_of(reply)
        assert server.allocations[client.five_tuple].reported_relayed == relayed
    assert len(server.allocations) == 1
    assert server.state_sizes()["sources"] == 1


def test_a_plain_allocate_is_unchanged_by_mobility() -> None:
    server = mobile_server()
    client = Client(server, now=10)
    reply = client.call(Method.ALLOCATE, RequestedTransport(17))
    assert_success(client, reply)
    assert reply.get(XorRelayedAddress) is not None
