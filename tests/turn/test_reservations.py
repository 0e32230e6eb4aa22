"""EVEN-PORT and RESERVATION-TOKEN in the core (RFC 8656 §7.2 steps 5 and 8, §14.6, §14.9).

An R=1 Allocate gets an even port and a token for port+1; the token gets exactly that
port, once, within 30 s; it does not go with EVEN-PORT or a family (400); an unknown,
used or expired token is 508; reservations are quota slots and come back (port and
slot) when they expire, fail, or the server stops.
"""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import (
    REALM,
    Client,
    assert_error,
    assert_success,
    make_server,
    run_timers,
)
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import (
    Attribute,
    EvenPort,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import AddressFamily, Method
from trelay.stun.message import Message
from trelay.turn.actions import CloseRelay, OpenRelay
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig
from trelay.turn.reservations import RESERVATION_SECONDS
from trelay.turn.server import TurnServer

HOST = "198.51.100.1"


def pooled(
    low: int = 50000,
    high: int = 50009,
    *,
    user_quota: int = 0,
    total_quota: int = 0,
    allocations_per_source: int = 1000,
) -> TurnServer:
    config = TurnConfig(
        realm=REALM, relay_host=HOST, port_range=(low, high), user_quota=user_quota,
        total_quota=total_quota, allocations_per_source=allocations_per_source,
    )  # fmt: skip
    return make_server(config)


def relayed_port(reply: Message | None) -> int:
    assert reply is not None
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None
    return relayed.port


def token_of(reply: Message | None) -> bytes:
    assert reply is not None
    token = reply.get(ReservationToken)
    assert token is not None
    return token.value


def reserve(server: TurnServer, client: Client) -> tuple[int, bytes]:
    reply = client.allocate(EvenPort(reserve_next=True))
    assert_success(client, reply)
    return relayed_port(reply), token_of(reply)


def other(server: TurnServer, index: int = 1, username: str = "alice") -> Client:
    password = {"alice": "secret", "bob": "hunter2"}[username]
    return Client(server, address=("203.0.113.50", 40000 + index), username=username,
                  password=password)  # fmt: skip


def test_r_bit_reserves_the_next_port_and_its_token_gets_it() -> None:
    server = pooled()
    rtp = Client(server)
    port, token = reserve(server, rtp)
    assert port % 2 == 0 and len(token) == 8
    assert server.ports is not None and server.ports.in_use == 2  # N and N+1
    assert server.state_sizes()["reservations"] == 1
    rtcp = other(server)
    reply = rtcp.allocate(ReservationToken(token))
    assert_success(rtcp, reply)
    assert relayed_port(reply) == port + 1
    assert reply is not None and reply.get(ReservationToken) is None
    assert server.ports.in_use == 2
    assert server.state_sizes()["reservations"] == 0
    # Used: gone. Another client presenting it gets 508 (§7.2 step 5).
    late = other(server, 2)
    assert_error(late, late.allocate(ReservationToken(token)), 508, signed=True)


def test_even_port_without_r_gets_an_even_port_and_no_token() -> None:
    server = pooled(50001, 50009)
    c = Client(server)
    reply = c.allocate(EvenPort())
    assert_success(c, reply)
    assert relayed_port(reply) % 2 == 0
    assert reply is not None and reply.get(ReservationToken) is None
    assert server.ports is not None and server.ports.in_use == 1


@pytest.mark.parametrize(
    "extra",
    [EvenPort(), EvenPort(reserve_next=True), RequestedAddressFamily(AddressFamily.IPV4)],
    ids=["even-port", "even-port-r", "family"],
)
def test_400_token_with_even_port_or_family(extra: Attribute) -> None:
    server = pooled()
    _, token = reserve(server, Client(server))
    c = other(server)
    assert_error(c, c.allocate(ReservationToken(token), extra), 400, signed=True)
    assert server.state_sizes()["reservations"] == 1  # a bad request spends no token


def test_reservation_expires_after_30_s_and_its_port_returns() -> None:
    server = pooled()
    port, token = reserve(server, Client(server))
    actions = run_timers(server, RESERVATION_SECONDS - 1)
    assert not any(isinstance(a, CloseRelay) for a in actions)
    actions = run_timers(server, RESERVATION_SECONDS)
    assert CloseRelay((HOST, port + 1)) in actions
    assert server.ports is not None and server.ports.in_use == 1
    assert server.state_sizes()["reservations"] == 0
    c = other(server)
    c.now = RESERVATION_SECONDS
    assert_error(c, c.allocate(ReservationToken(token)), 508, signed=True)


def test_a_token_is_invalid_at_its_expiry_even_before_the_timer_runs() -> None:
    server = pooled()
    _, token = reserve(server, Client(server))
    c = other(server)
    c.now = RESERVATION_SECONDS  # handle_timer has not run yet
    assert_error(c, c.allocate(ReservationToken(token)), 508, signed=True)


def test_no_even_pair_free_is_508_until_one_is() -> None:
    server = pooled(50002, 50003)  # one pair
    c = Client(server)
    assert_success(c, c.allocate())  # takes 50002 or 50003: no pair is left either way
    d = other(server)
    assert_error(d, d.allocate(EvenPort(reserve_next=True)), 508, signed=True)
    assert_success(c, c.refresh(0))
    reply = d.allocate(EvenPort(reserve_next=True))
    assert_success(d, reply)
    assert relayed_port(reply) == 50002


def test_the_pair_is_even_and_inside_the_range() -> None:
    server = pooled(50001, 50002)  # 50002 is even but 50003 is outside the range
    c = Client(server)
    assert_error(c, c.allocate(EvenPort(reserve_next=True)), 508, signed=True)
    assert server.ports is not None and server.ports.in_use == 0


def test_without_a_range_the_runtime_is_asked_for_an_even_port_and_its_neighbour() -> None:
    server = make_server(TurnConfig(realm=REALM, relay_host=HOST))
    rtp = Client(server, auto_open=False)
    rtp.authenticate()
    request = rtp.request(Method.ALLOCATE, RequestedTransport(17), EvenPort(reserve_next=True))
    assert rtp.send(request) is None
    (open_,) = rtp.opens
    assert open_ == OpenRelay(rtp.five_tuple, HOST, 0, even=True, reserve_next=True)
    reply = rtp.response(
        server.relay_opened(rtp.five_tuple, (HOST, 40000), 0, reserved=(HOST, 40001)), request
    )
    assert_success(rtp, reply)
    token = token_of(reply)
    rtcp = Client(server, address=("203.0.113.50", 1), auto_open=False)
    rtcp.authenticate()
    request = rtcp.request(Method.ALLOCATE, RequestedTransport(17), ReservationToken(token))
    assert rtcp.send(request) is None
    assert rtcp.opens == [OpenRelay(rtcp.five_tuple, HOST, 40001, reserved=True)]
    reply = rtcp.response(server.relay_opened(rtcp.five_tuple, (HOST, 40001), 0), request)
    assert_success(rtcp, reply)
    assert relayed_port(reply) == 40001


def test_a_redeemed_reservation_that_fails_to_bind_is_508_at_once() -> None:
    server = pooled()
    port, token = reserve(server, Client(server))
    c = other(server)
    c.auto_open = False
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17), ReservationToken(token))
    assert c.send(request) is None
    assert c.opens[0].port == port + 1 and c.opens[0].reserved
    assert_error(c, c.response(server.relay_failed(c.five_tuple, 0), request), 508, signed=True)
    assert server.ports is not None and server.ports.in_use == 1  # port+1 is free again
    assert server.identity_counts() == {"alice": 1}


def test_a_failed_pair_bind_tries_another_pair_and_frees_the_first() -> None:
    server = pooled(50000, 50003)
    c = Client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17), EvenPort(reserve_next=True))
    assert c.send(request) is None
    first = c.opens[-1]
    assert first.reserve_next and first.port % 2 == 0
    actions = server.relay_failed(c.five_tuple, 0)
    (second,) = [a for a in actions if isinstance(a, OpenRelay)]
    assert second.reserve_next and second.port % 2 == 0
    assert server.ports is not None and server.ports.in_use == 2
    reply = c.response(
        server.relay_opened(c.five_tuple, (HOST, second.port), 0, reserved=(HOST, second.port + 1)),
        request,
    )
    assert_success(c, reply)
    assert relayed_port(reply) == second.port
    assert server.ports.in_use == 2


def test_reservations_are_quota_slots() -> None:
    server = pooled(user_quota=1)
    c = Client(server)
    # Two slots needed (the allocation and the reservation), one allowed.
    assert_error(c, c.allocate(EvenPort(reserve_next=True)), 486, signed=True)
    assert server.identity_counts() == {}
    assert server.ports is not None and server.ports.in_use == 0

    server = pooled(user_quota=2)
    _, token = reserve(server, Client(server))
    assert server.identity_counts() == {"alice": 2}
    # A plain Allocate of alice's: over the quota; redeeming her own token: not.
    c = other(server, 1)
    assert_error(c, c.allocate(), 486, signed=True)
    d = other(server, 2)
    assert_success(d, d.allocate(ReservationToken(token)))
    assert server.identity_counts() == {"alice": 2}


def test_reservations_count_toward_the_total_and_the_source() -> None:
    server = pooled(total_quota=2)
    _, token = reserve(server, Client(server))
    bob = other(server, 1, "bob")
    assert_error(bob, bob.allocate(), 508, signed=True)  # the total is reached
    assert_success(bob, bob.allocate(ReservationToken(token)))  # the slot is handed over

    server = pooled(allocations_per_source=2)
    reserve(server, Client(server))
    same_source = Client(server, address=("203.0.113.5", 1), username="bob", password="hunter2")
    assert_error(same_source, same_source.allocate(), 486, signed=True)


def test_a_connection_closed_while_reserving_frees_both_slots_and_ports() -> None:
    server = pooled()
    c = Client(server, auto_open=False)
    c.authenticate()
    c.send(c.request(Method.ALLOCATE, RequestedTransport(17), EvenPort(reserve_next=True)))
    assert server.identity_counts() == {"alice": 2}
    assert server.ports is not None and server.ports.in_use == 2
    server.connection_closed(c.five_tuple)
    assert server.identity_counts() == {}
    assert server.ports.in_use == 0
    # The runtime's late report: both sockets are closed again.
    open_ = c.opens[0]
    relayed: Address = (HOST, open_.port)
    reserved: Address = (HOST, open_.port + 1)
    actions = server.relay_opened(c.five_tuple, relayed, 0, reserved=reserved)
    assert actions == [CloseRelay(relayed), CloseRelay(reserved)]


def test_a_runtime_that_reserves_nothing_gets_no_token_and_the_slot_back() -> None:
    server = make_server(TurnConfig(realm=REALM, relay_host=HOST))
    c = Client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17), EvenPort(reserve_next=True))
    c.send(request)
    reply = c.response(server.relay_opened(c.five_tuple, (HOST, 40000), 0), request)
    assert_success(c, reply)
    assert reply is not None and reply.get(ReservationToken) is None
    assert server.identity_counts() == {"alice": 1}


def test_shutdown_closes_the_held_sockets() -> None:
    server = pooled()
    port, _ = reserve(server, Client(server))
    actions = server.shutdown()
    assert CloseRelay((HOST, port + 1)) in actions and CloseRelay((HOST, port)) in actions
    assert server.ports is not None and server.ports.in_use == 0
    assert server.state_sizes()["reservations"] == 0
    assert run_timers(server, 100) == []  # the cancelled timer does not fire


def test_a_redeemed_reservation_leaves_no_timer() -> None:
    server = pooled()
    _, token = reserve(server, Client(server))
    live = server.state_sizes()["timers_live"]
    rtcp = other(server)
    assert_success(rtcp, rtcp.allocate(ReservationToken(token)))
    # The redeemer's allocation timer replaced the reservation's; the latter never fires.
    assert server.state_sizes()["timers_live"] == live
    assert not any(isinstance(a, CloseRelay) for a in run_timers(server, 2 * RESERVATION_SECONDS))
