"""Dual allocation in the core (RFC 8656 §7.2 steps 5, 6, 8, 9; §7.3; §14.11, §14.12).

One Allocate with ADDITIONAL-ADDRESS-FAMILY IPv6 on a dual-stack server gets an IPv4 and
an IPv6 relayed address; if the IPv6 one cannot be made the IPv4 one still is, with an
ADDRESS-ERROR-CODE. Peers of either family are permitted, each reached from the relayed
address of its family; Refresh refreshes both, or with REQUESTED-ADDRESS-FAMILY IPv6 and
LIFETIME 0 deletes the IPv6 one alone; every end closes both sockets.
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
    AdditionalAddressFamily,
    AdditionalAddressFamilyDraft,
    Attribute,
    EvenPort,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import AddressFamily, Method
from trelay.stun.error_attributes import AddressErrorCode
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message
from trelay.turn.actions import Action, CloseRelay, OpenRelay, SendToPeer
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer

V4, V6 = "198.51.100.1", "2001:db8::1"
PEER_4: Address = ("127.0.0.1", 5000)  # loopback peers: the test policy allows them
PEER_6: Address = ("::1", 6000)
DUAL = AdditionalAddressFamily(AddressFamily.IPV6)
IPV6 = RequestedAddressFamily(AddressFamily.IPV6)


def dual_stack(port_range: tuple[int, int] | None = None) -> TurnServer:
    return make_server(
        TurnConfig(realm=REALM, relay_host=V4, relay_host_v6=V6, port_range=port_range)
    )


def relayed_of(reply: Message | None) -> list[Address]:
    assert reply is not None
    return [(a.host, a.port) for a in reply.get_all(XorRelayedAddress)]


def assert_ipv6_refused(reply: Message | None, code: int) -> None:
    """The success carries ADDRESS-ERROR-CODE for IPv6 with `code` (RFC 8656 §14.11)."""
    assert reply is not None
    error = reply.get(AddressErrorCode)
    assert error is not None and (error.family, error.code) == (AddressFamily.IPV6, code)


def dual_client(server: TurnServer, port: int = 50000) -> tuple[Client, Address, Address]:
    c = Client(server, address=("203.0.113.5", port))
    reply = c.allocate(DUAL)
    assert_success(c, reply)
    assert reply is not None and reply.get(AddressErrorCode) is None
    v4, v6 = relayed_of(reply)
    return c, v4, v6


def sent(actions: list[Action]) -> list[SendToPeer]:
    return [a for a in actions if isinstance(a, SendToPeer)]


def test_one_allocate_gets_an_ipv4_and_an_ipv6_relayed_address() -> None:
    server = dual_stack((50000, 50009))
    c, v4, v6 = dual_client(server)
    assert v4[0] == V4 and v6[0] == V6
    allocation = server.allocations[c.five_tuple]
    assert (allocation.relayed, allocation.second) == (v4, v6)
    assert server.by_relayed[v4] is server.by_relayed[v6] is allocation
    # One allocation: one quota slot, one port of the range (both sockets use it here).
    assert server.identity_counts() == {"alice": 1}
    assert server.ports is not None and server.ports.in_use == 1


def test_the_runtime_is_asked_for_both_sockets() -> None:
    server = dual_stack()
    c = Client(server, auto_open=False)
    c.authenticate()
    c.send(c.request(Method.ALLOCATE, RequestedTransport(17), DUAL))
    assert c.opens == [OpenRelay(c.five_tuple, V4, 0, dual_host=V6)]


def test_each_peer_is_reached_from_the_relayed_address_of_its_family() -> None:
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    assert_success(c, c.permit(PEER_4, PEER_6))
    assert sent(c.send_indication(PEER_4, b"four")) == [SendToPeer(v4, PEER_4, b"four")]
    assert sent(c.send_indication(PEER_6, b"six")) == [SendToPeer(v6, PEER_6, b"six")]
    assert_success(c, c.bind(0x4000, PEER_6))
    allocation = server.allocations[c.five_tuple]
    assert server.peer_datagram(allocation, PEER_6, b"x") is not None
    # A permission is per IP: none for this IPv6 peer.
    other = ("::ffff:127.0.0.2", 6000)
    assert sent(c.send_indication(other, b"no")) == []
    assert server.peer_datagram(allocation, other, b"no") is None


def test_a_single_family_allocation_still_refuses_the_other_family() -> None:
    server = dual_stack()
    c = Client(server)
    assert_success(c, c.allocate())
    assert_error(c, c.permit(PEER_6), 443, signed=True)
    assert sent(c.send_indication(PEER_6, b"x")) == []


def test_refresh_refreshes_both_and_zero_ends_both() -> None:
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    c.now = 500
    assert_success(c, c.refresh(600))
    assert_success(c, c.call(Method.REFRESH, Lifetime(600), IPV6))  # either family: both
    assert run_timers(server, 1000) == []  # past the first lifetime: still alive
    assert server.by_relayed[v6] is server.allocations[c.five_tuple]
    c.now = 1000
    request = c.request(Method.REFRESH, Lifetime(0))
    actions = c.send_raw(encode_signed(request, c.key))
    assert_success(c, c.response(actions, request))
    assert [a for a in actions if isinstance(a, CloseRelay)] == [CloseRelay(v4), CloseRelay(v6)]
    assert c.five_tuple not in server.allocations
    assert v4 not in server.by_relayed and v6 not in server.by_relayed


def test_refresh_with_ipv6_and_zero_deletes_the_ipv6_address_alone() -> None:
    server = dual_stack()
    c, _, v6 = dual_client(server)
    assert_success(c, c.permit(PEER_4, PEER_6))
    assert_success(c, c.bind(0x4001, PEER_6))
    request = c.request(Method.REFRESH, Lifetime(0), IPV6)
    actions = c.send_raw(encode_signed(request, c.key))
    reply = c.response(actions, request)
    assert_success(c, reply)
    assert [a for a in actions if isinstance(a, CloseRelay)] == [CloseRelay(v6)]
    allocation = server.allocations[c.five_tuple]
    assert allocation.second is None and v6 not in server.by_relayed
    assert PEER_6[0] not in allocation.permissions and not allocation.channels
    assert PEER_4[0] in allocation.permissions
    assert_error(c, c.permit(PEER_6), 443, signed=True)  # a single-family one now
    assert_error(c, c.call(Method.REFRESH, Lifetime(600), IPV6), 443, signed=True)


def test_every_end_closes_both_sockets() -> None:
    server = dual_stack()
    _, v4, v6 = dual_client(server)
    closes = [a for a in run_timers(server, 10_000) if isinstance(a, CloseRelay)]
    assert closes == [CloseRelay(v4), CloseRelay(v6)]
    _, v4, v6 = dual_client(server, 50001)
    closes = [a for a in server.end_allocation(v6) if isinstance(a, CloseRelay)]
    assert closes == [CloseRelay(v4), CloseRelay(v6)]
    _, v4, v6 = dual_client(server, 50002)
    assert {a for a in server.shutdown() if isinstance(a, CloseRelay)} == {
        CloseRelay(v4),
        CloseRelay(v6),
    }


def test_no_ipv6_relay_here_is_an_ipv4_allocation_with_address_error_440() -> None:
    server = make_server(TurnConfig(realm=REALM, relay_host=V4))
    c = Client(server)
    reply = c.allocate(DUAL)
    assert_success(c, reply)
    assert relayed_of(reply)[0][0] == V4 and len(relayed_of(reply)) == 1
    assert_ipv6_refused(reply, 440)


def test_an_ipv6_socket_that_fails_is_an_ipv4_allocation_with_address_error_508() -> None:
    server = dual_stack()
    c = Client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17), DUAL)
    c.send(request)
    reply = c.response(server.relay_opened(c.five_tuple, (V4, 40000), 0), request)
    assert_success(c, reply)
    assert relayed_of(reply) == [(V4, 40000)]
    assert_ipv6_refused(reply, 508)
    assert server.allocations[c.five_tuple].second is None


def test_a_second_socket_not_asked_for_is_closed() -> None:
    server = dual_stack()
    c = Client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17))
    c.send(request)
    actions = server.relay_opened(c.five_tuple, (V4, 40000), 0, second=(V6, 40000))
    assert CloseRelay((V6, 40000)) in actions
    assert_success(c, c.response(actions, request))
    assert (V6, 40000) not in server.by_relayed


@pytest.mark.parametrize(
    "extra",
    [
        (RequestedAddressFamily(AddressFamily.IPV4),),  # step 6
        (EvenPort(reserve_next=True),),  # step 8
        (ReservationToken(bytes(8)),),  # step 5
    ],
    ids=["requested-family", "even-port-r", "token"],
)
def test_400_dual_with(extra: tuple[Attribute, ...]) -> None:
    c = Client(dual_stack())
    assert_error(c, c.allocate(DUAL, *extra), 400, signed=True)


def test_400_additional_family_ipv4() -> None:
    c = Client(dual_stack())
    reply = c.allocate(AdditionalAddressFamily(AddressFamily.IPV4))  # step 9
    assert_error(c, reply, 400, signed=True)


def test_even_port_without_r_goes_with_dual() -> None:
    server = dual_stack((50001, 50009))
    c = Client(server)
    reply = c.allocate(DUAL, EvenPort())
    assert_success(c, reply)
    assert all(port % 2 == 0 for _, port in relayed_of(reply))


def test_coturns_draft_code_point_asks_for_a_dual_allocation_too() -> None:
    c = Client(dual_stack())
    reply = c.allocate(AdditionalAddressFamilyDraft(AddressFamily.IPV6))  # 0x8032
    assert_success(c, reply)
    assert [host for host, _ in relayed_of(reply)] == [V4, V6]
