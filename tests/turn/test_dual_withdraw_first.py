"""A dual allocation's IPv4 family deleted alone (RFC 8656 §7.3: a Refresh with
REQUESTED-ADDRESS-FAMILY IPv4 and LIFETIME 0; before, it deleted the whole allocation).

The IPv4 address is withdrawn: its permissions and channels go, no IPv4 peer is served,
and the allocation lives on with its IPv6 address; the IPv4 socket stays bound, unused,
until the allocation ends (the allocation is known by it: usage records, mobility
tickets, the runtime's relay record), and then both close.
"""

from __future__ import annotations

from tests.helpers.turn_harness import assert_error, assert_success, run_timers
from tests.turn.test_dual_allocation import IPV6, PEER_4, PEER_6, dual_client, dual_stack, sent
from trelay.stun.attributes import Lifetime, RequestedAddressFamily
from trelay.stun.codes import AddressFamily, Method
from trelay.stun.integrity import encode_signed
from trelay.turn.actions import AllocationEnded, CloseRelay, SendToPeer

IPV4 = RequestedAddressFamily(AddressFamily.IPV4)


def test_ipv4_and_lifetime_zero_withdraw_the_ipv4_address_alone() -> None:
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    assert_success(c, c.permit(PEER_4, PEER_6))
    assert_success(c, c.bind(0x4001, PEER_4))
    assert_success(c, c.bind(0x4002, PEER_6))
    request = c.request(Method.REFRESH, Lifetime(0), IPV4)
    actions = c.send_raw(encode_signed(request, c.key))
    assert_success(c, c.response(actions, request))
    assert not [a for a in actions if isinstance(a, CloseRelay | AllocationEnded)]
    allocation = server.allocations[c.five_tuple]
    assert allocation.first_withdrawn and allocation.second == v6
    assert server.by_relayed[v4] is server.by_relayed[v6] is allocation  # still its keys
    assert PEER_4[0] not in allocation.permissions and PEER_6[0] in allocation.permissions
    assert list(allocation.channels) == [0x4002]
    # No IPv4 peer is served any more; IPv6 peers are, from the IPv6 address.
    assert_error(c, c.permit(PEER_4), 443, signed=True)
    assert sent(c.send_indication(PEER_4, b"no")) == []
    assert server.peer_datagram(allocation, PEER_4, b"no") is None
    assert sent(c.send_indication(PEER_6, b"six")) == [SendToPeer(v6, PEER_6, b"six")]
    assert server.peer_datagram(allocation, PEER_6, b"six") is not None
    # The IPv4 family is gone: naming it again is a mismatch; a plain Refresh refreshes.
    assert_error(c, c.call(Method.REFRESH, Lifetime(600), IPV4), 443, signed=True)
    assert_success(c, c.refresh(600))
    # Deleting the last family ends the allocation: both sockets close.
    request = c.request(Method.REFRESH, Lifetime(0), IPV6)
    actions = c.send_raw(encode_signed(request, c.key))
    assert_success(c, c.response(actions, request))
    assert [a for a in actions if isinstance(a, CloseRelay)] == [CloseRelay(v4), CloseRelay(v6)]
    assert c.five_tuple not in server.allocations and not server.by_relayed


def test_a_withdrawn_ipv4_address_closes_with_the_allocation() -> None:
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    assert_success(c, c.call(Method.REFRESH, Lifetime(0), IPV4))
    ends = run_timers(server, 10_000)
    assert [a for a in ends if isinstance(a, CloseRelay)] == [CloseRelay(v4), CloseRelay(v6)]
    [ended] = [a for a in ends if isinstance(a, AllocationEnded)]
    assert ended.relayed == v4  # the usage record's and the runtime's key, unchanged


def test_a_single_family_allocation_still_ends_on_its_family_and_zero() -> None:
    server = dual_stack()
    c = dual_client(server)[0]
    assert_success(c, c.call(Method.REFRESH, Lifetime(0), IPV6))  # now IPv4 only
    assert_success(c, c.call(Method.REFRESH, Lifetime(0), IPV4))
    assert c.five_tuple not in server.allocations
