"""The operator's view of the allocations beyond a single-family UDP one
(`trelay.turn.allocation_view`): a dual allocation shows both relayed addresses (RFC 8656
§7.2), a TCP allocation how many peer connections it holds (RFC 6062 §5.2-§5.4)."""

from __future__ import annotations

from tests.helpers.turn_harness import Client, assert_success, make_server
from tests.turn.test_dual_allocation import dual_client, dual_stack
from tests.turn.test_dual_withdraw_first import IPV4
from tests.turn.test_tcp_relay import OTHER_PEER, allocated, bind, config, connected
from trelay.stun.attributes import Lifetime
from trelay.stun.codes import Method


def test_a_dual_allocation_shows_both_relayed_addresses() -> None:
    server = dual_stack()
    _, v4, v6 = dual_client(server)
    [view] = server.allocation_views(0.0)
    assert (view.relayed, view.reported_relayed) == (v4, v4)  # the first, as before
    assert (view.second_relayed, view.second_reported_relayed) == (v6, v6)
    assert view.peer_connections is None  # a UDP allocation


def test_a_single_family_allocation_shows_no_second_address() -> None:
    server = dual_stack()
    assert_success(c := Client(server), c.allocate())
    [view] = server.allocation_views(0.0)
    assert view.second_relayed is None and view.second_reported_relayed is None


def test_a_tcp_allocation_counts_its_peer_connections() -> None:
    c = allocated(make_server(config()))
    [view] = c.server.allocation_views(c.now)
    assert view.peer_connections == 0
    first = connected(c)
    connected(c, OTHER_PEER)
    [view] = c.server.allocation_views(c.now)
    assert view.peer_connections == 2  # both waiting for their ConnectionBind
    data, reply = bind(c, first)
    assert_success(data, reply)
    [view] = c.server.allocation_views(c.now)
    assert view.peer_connections == 2  # one spliced, one waiting
    c.server.peer_connection_closed(first)
    [view] = c.server.allocation_views(c.now)
    assert view.peer_connections == 1


def test_a_withdrawn_first_family_is_shown_as_such() -> None:
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    assert_success(c, c.call(Method.REFRESH, Lifetime(0), IPV4))
    [view] = server.allocation_views(0.0)
    assert view.first_withdrawn and (view.relayed, view.second_relayed) == (v4, v6)
