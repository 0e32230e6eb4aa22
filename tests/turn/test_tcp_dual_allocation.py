"""A TCP allocation (RFC 6062 §5.1) asking for dual allocation (RFC 8656 §7.2 step 9,
ADDITIONAL-ADDRESS-FAMILY IPv6): its IPv4 relayed address and ADDRESS-ERROR-CODE 440
(Address Family not Supported) for IPv6; one listening socket asked for. Before, the
success carried no ADDRESS-ERROR-CODE: the client could not tell why IPv6 was missing."""

from __future__ import annotations

from tests.helpers.turn_harness import assert_error, assert_success
from tests.turn.test_dual_allocation import DUAL, V4, assert_ipv6_refused, dual_stack, relayed_of
from tests.turn.test_tcp_relay import tcp_client
from trelay.stun.attributes import AdditionalAddressFamily, RequestedTransport
from trelay.stun.codes import AddressFamily, Method
from trelay.stun.error_attributes import AddressErrorCode


def test_a_tcp_dual_allocation_is_ipv4_with_address_error_440() -> None:
    server = dual_stack()
    c = tcp_client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(6), DUAL)
    c.send(request)
    assert [(o.tcp, o.dual_host) for o in c.opens] == [(True, None)]  # one socket
    reply = c.response(server.relay_opened(c.five_tuple, (V4, 40000), 0), request)
    assert_success(c, reply)
    assert relayed_of(reply) == [(V4, 40000)]
    assert_ipv6_refused(reply, 440)
    allocation = server.allocations[c.five_tuple]
    assert allocation.second is None and server.tcp.is_tcp(allocation)


def test_a_tcp_allocation_without_the_attribute_has_no_address_error() -> None:
    c = tcp_client(dual_stack())
    reply = c.call(Method.ALLOCATE, RequestedTransport(6))
    assert_success(c, reply)
    assert reply is not None and reply.get(AddressErrorCode) is None


def test_a_tcp_allocation_asking_for_ipv4_as_additional_is_still_400() -> None:
    c = tcp_client(dual_stack())
    reply = c.call(
        Method.ALLOCATE, RequestedTransport(6), AdditionalAddressFamily(AddressFamily.IPV4)
    )
    assert_error(c, reply, 400, signed=True)
