"""A draining core redirects newcomers: 300 Try Alternate with ALTERNATE-SERVER (RFC 8489
§10, §14.15; RFC 8656 §7.2), signed, when an alternate of the client's family is given;
508 otherwise; and the allocations it already has keep refreshing, permitting, binding
and relaying until they end (design §4).
"""

from __future__ import annotations

from tests.helpers.turn_harness import Client, assert_error, assert_success, make_server, run_timers
from trelay.stun.address_attributes import AlternateServer
from trelay.stun.attributes import Lifetime, RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.turn.actions import SendToPeer

PEER = ("127.0.0.1", 40000)  # make_server allows loopback peers
ALTERNATE = ("198.51.100.77", 3478)


def test_a_newcomer_gets_300_with_the_alternate_signed() -> None:
    server = make_server()
    server.start_draining(alternate=ALTERNATE)
    assert server.alternate == ALTERNATE
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply is not None
    assert reply.get(AlternateServer) == AlternateServer(*ALTERNATE)
    error = reply.get(ErrorCodeAttribute)
    assert error is not None and error.reason == "Server is draining: try the alternate"
    assert server.allocation_count == 0
    assert server.stats.responses[(Method.ALLOCATE, 300)] == 1  # counted by the code it carried


def test_a_retransmitted_allocate_gets_the_same_300() -> None:
    server = make_server()
    server.start_draining(alternate=ALTERNATE)
    newcomer = Client(server)
    newcomer.authenticate()
    request = newcomer.request(Method.ALLOCATE, RequestedTransport(17))
    first = newcomer.send(request)
    again = newcomer.send(request)
    assert first == again
    assert first is not None and first.get(AlternateServer) == AlternateServer(*ALTERNATE)


def test_an_alternate_of_the_other_family_is_not_offered_508_instead() -> None:
    server = make_server()
    server.start_draining(alternate=("2001:db8::77", 3478))
    newcomer = Client(server)  # an IPv4 client
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 508, signed=True)
    assert reply is not None and reply.get(AlternateServer) is None


def test_an_ipv4_mapped_client_is_an_ipv4_client() -> None:
    server = make_server()
    server.start_draining(alternate=ALTERNATE)
    newcomer = Client(server, address=("::ffff:203.0.113.8", 4000))
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply is not None and reply.get(AlternateServer) == AlternateServer(*ALTERNATE)


def test_without_an_alternate_508_as_before() -> None:
    server = make_server()
    server.start_draining()
    assert server.alternate is None
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 508, signed=True)
    assert reply is not None and reply.get(AlternateServer) is None


def test_not_draining_the_alternate_plays_no_part() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    assert server.allocation_count == 1


def test_existing_allocations_keep_refreshing_and_relaying_while_newcomers_go_elsewhere() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.start_draining(alternate=ALTERNATE)
    bob = Client(server, address=("203.0.113.9", 1), username="bob", password="hunter2")
    assert_error(bob, bob.allocate(), 300, signed=True)
    # Alice refreshes again and again, well past her first lifetime (600 s from 0).
    for now in (500.0, 1000.0, 1500.0):
        alice.now = now
        refreshed = alice.refresh(600)
        assert_success(alice, refreshed)
        lifetime = refreshed.get(Lifetime)
        assert lifetime is not None and lifetime.value == 600
        assert_success(alice, alice.permit(PEER))
        assert_success(alice, alice.bind(0x4000, PEER))
        run_timers(server, now + 1)
        assert alice.five_tuple in server.allocations
    state = server.allocations[alice.five_tuple]
    assert alice.send_indication(PEER, b"x") == [SendToPeer(state.relayed, PEER, b"x")]
    assert server.peer_datagram(state, PEER, b"hi") == b"\x40\x00\x00\x02hi"
    # Her allocation ends on its own: the drain has nothing left to wait for.
    run_timers(server, 2101)
    assert server.allocation_count == 0
