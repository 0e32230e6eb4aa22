"""Lifetimes of allocations, permissions and channels (RFC 8656 §7, §9, §12; design §5).

Time is driven as a runtime does: `run_timers` calls `handle_timer` at each
`next_deadline()`. No sleeps.
"""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import Client, assert_success, make_server, run_timers
from trelay.stun.attributes import Lifetime
from trelay.stun.codes import Method
from trelay.stun.integrity import encode_signed
from trelay.turn.actions import Action, AllocationEnded, CloseRelay, EndReason, SendToPeer
from trelay.turn.allocation import Allocation

PEER = ("127.0.0.1", 40000)


def lifetime_of(reply_lifetime: Lifetime | None) -> int:
    assert reply_lifetime is not None
    return reply_lifetime.value


def allocation(client: Client) -> Allocation:
    return client.server.allocations[client.five_tuple]


def closes(actions: list[Action]) -> list[CloseRelay]:
    return [a for a in actions if isinstance(a, CloseRelay)]


@pytest.mark.parametrize(
    "requested, granted",
    [(None, 600), (30, 600), (0, 600), (600, 600), (1200, 1200), (99999, 3600)],
)
def test_allocate_lifetime(requested: int | None, granted: int) -> None:
    c = Client(make_server(), now=10)
    reply = c.allocate() if requested is None else c.allocate(Lifetime(requested))
    assert_success(c, reply)
    assert lifetime_of(reply.get(Lifetime)) == granted
    assert allocation(c).expires_at == 10 + granted


@pytest.mark.parametrize("requested, granted", [(None, 600), (30, 30), (99999, 3600)])
def test_refresh_lifetime(requested: int | None, granted: int) -> None:
    c = Client(make_server())
    assert_success(c, c.allocate())
    c.now = 100
    reply = c.refresh(requested)
    assert_success(c, reply)
    assert lifetime_of(reply.get(Lifetime)) == granted
    assert allocation(c).expires_at == 100 + granted


def test_refresh_zero_deletes_and_closes_the_relay() -> None:
    c = Client(make_server())
    assert_success(c, c.allocate())
    relayed = allocation(c).relayed
    c.now = 50
    request = c.request(Method.REFRESH, Lifetime(0))
    actions = c.send_raw(encode_signed(request, c.key))
    reply = c.response(actions, request)
    assert_success(c, reply)
    assert reply is not None and lifetime_of(reply.get(Lifetime)) == 0
    assert closes(actions) == [CloseRelay(relayed)]
    assert AllocationEnded(c.five_tuple, relayed, "alice", EndReason.DELETED) in actions
    assert not c.server.allocations and not c.server.by_relayed
    assert closes(run_timers(c.server, 5000)) == []  # the old timer does not close it again


def test_allocation_expires_exactly_at_its_deadline() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate())
    relayed = allocation(c).relayed
    assert closes(run_timers(server, 599.5)) == []
    assert server.next_deadline() == 600
    actions = server.handle_timer(600)
    assert closes(actions) == [CloseRelay(relayed)]
    assert AllocationEnded(c.five_tuple, relayed, "alice", EndReason.EXPIRED) in actions
    assert not server.allocations and not server.client_table(c.transport, c.five_tuple.server)
    assert server.next_deadline() is None


def test_refresh_moves_the_deadline_both_ways() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate())
    c.now = 100
    assert_success(c, c.refresh(30))
    assert closes(run_timers(server, 129)) == []
    assert closes(run_timers(server, 130)) != []  # shortened: ends at 130, not 600
    d = Client(server, address=("203.0.113.9", 1), now=200)
    assert_success(d, d.allocate())
    d.now = 700
    assert_success(d, d.refresh(600))
    assert closes(run_timers(server, 1299)) == []  # the old deadline (800) passed harmlessly
    relayed = allocation(d).relayed
    assert closes(run_timers(server, 1300)) == [CloseRelay(relayed)]


def test_permission_expires_at_300_seconds() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate())
    c.now = 10
    assert_success(c, c.permit(PEER))
    state = allocation(c)
    run_timers(server, 309.9)
    assert server.peer_datagram(state, PEER, b"x") is not None
    assert c.send_indication(PEER, b"x") == [SendToPeer(state.relayed, PEER, b"x")]
    run_timers(server, 310)
    assert PEER[0] not in state.permissions
    assert server.peer_datagram(state, PEER, b"x") is None
    c.now = 310
    assert c.send_indication(PEER, b"x") == []


def test_create_permission_refresh_extends_it() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate())
    assert_success(c, c.permit(PEER))
    c.now = 200
    assert_success(c, c.permit(PEER))
    run_timers(server, 450)
    assert allocation(c).permissions == {PEER[0]: 500}


def test_channel_keeps_its_permission_alive_until_the_channel_expires() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate(Lifetime(3600)))
    c.now = 10
    assert_success(c, c.bind(0x4000, PEER))  # no CreatePermission, as aioice
    state = allocation(c)
    for moment in (300, 310, 500, 609.5):
        run_timers(server, moment)
        assert state.permissions[PEER[0]] == 610
        assert server.peer_datagram(state, PEER, b"hi") == b"\x40\x00\x00\x02hi"
    run_timers(server, 610)
    assert not state.channels and not state.peers and not state.permissions
    assert server.peer_datagram(state, PEER, b"hi") is None


def test_channel_refresh_extends_channel_and_permission() -> None:
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate(Lifetime(3600)))
    assert_success(c, c.bind(0x4000, PEER))
    c.now = 400
    assert_success(c, c.bind(0x4000, PEER))
    state = allocation(c)
    assert state.channel_expiry == {0x4000: 1000}
    assert state.permissions == {PEER[0]: 1000}
    run_timers(server, 999)
    assert state.channels == {0x4000: PEER}
    run_timers(server, 1000)
    assert not state.channels and not state.permissions


def test_aioice_like_flow_survives_past_330_seconds_without_create_permission() -> None:
    """aioice refreshes the allocation at lifetime - 60 s and the channel at ~500 s only."""
    server = make_server()
    c = Client(server)
    assert_success(c, c.allocate())
    assert_success(c, c.bind(0x4000, PEER))
    state = allocation(c)
    allocation_refresh, channel_refresh = 540.0, 500.0
    relayed = 0
    for second in range(0, 2001, 10):
        moment = float(second)
        if moment >= channel_refresh:
            c.now = channel_refresh
            run_timers(server, c.now)
            assert_success(c, c.bind(0x4000, PEER))
            channel_refresh += 500
        if moment >= allocation_refresh:
            c.now = allocation_refresh
            run_timers(server, c.now)
            assert_success(c, c.refresh())
            allocation_refresh += 540
        run_timers(server, moment)
        assert server.allocations.get(c.five_tuple) is state
        assert server.peer_datagram(state, PEER, b"m") == b"\x40\x00\x00\x01m"
        assert state.channels.get(0x4000) == PEER and PEER[0] in state.permissions
        relayed += 1
    assert relayed == 201
