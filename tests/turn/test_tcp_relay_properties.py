"""Properties of RFC 6062 TCP allocations in the core, over random runs.

Whatever a client and the runtime do (Connect, the runtime connecting or failing, a
permission, peers connecting in, ConnectionBind with any id, either side closing, time
passing, the allocation ending and a new one made), after every step:

- every peer connection belongs to a live TCP allocation and is in both of the core's
  maps; an allocation holds at most `peer_connections_per_allocation`;
- a Connect is made (`ConnectPeer`) exactly when the allocation holds no connection to
  that peer, else it is 446 (or 508 at the bound);
- a ConnectionBind succeeds (and splices) exactly when it names a connection waiting for
  its bind, else 400;
- once the timers ran at `now`, no connection is still connecting or waiting past its
  deadline, and a spliced one has its data connection;
- `ClosePeerConnection` names only connections the core made; the timer heap holds at
  most twice its live entries plus its slack.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.turn_harness import REALM, Client, error_code, make_server, run_timers
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import ConnectionId, Lifetime, RequestedTransport
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.turn.actions import (
    AcceptPeer,
    Action,
    ClosePeerConnection,
    ConnectPeer,
)
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.config import TurnConfig
from trelay.turn.tcp_relay import ConnectionState

BOUND, TIMEOUT = 3, 30.0
CONFIG = TurnConfig(
    realm=REALM, relay_host="198.51.100.1", peer_connections_per_allocation=BOUND,
    tcp_connection_timeout=TIMEOUT,
)  # fmt: skip
PEERS: tuple[Address, ...] = tuple((f"127.0.0.{i + 1}", 4000 + i) for i in range(4))

_peer = st.integers(0, len(PEERS) - 1)
_pick = st.integers(0, 7)
_step = st.one_of(
    st.tuples(st.just("connect"), _peer),
    st.tuples(st.just("connected"), _pick),
    st.tuples(st.just("failed"), _pick),
    st.tuples(st.just("permit"), _peer),
    st.tuples(st.just("arrive"), _peer, st.integers(50000, 50003)),
    st.tuples(st.just("bind"), _pick),
    st.tuples(st.just("bind_unknown"), st.integers(1, 2**32 - 1)),
    st.tuples(st.just("closed"), _pick),
    st.tuples(st.just("wait"), st.floats(0, 2 * TIMEOUT, allow_nan=False)),
    st.tuples(
        st.just("end"),
    ),
)


class Run:
    def __init__(self) -> None:
        self.server = make_server(CONFIG)
        self.ports = itertools.count(40000)
        self.made: set[int] = set()  # every connection id the core gave out
        self.spliced: set[int] = set()  # bound by a ConnectionBind, not closed since
        self.now = 0.0
        self.client = self._allocate()

    def _tcp_client(self) -> Client:
        client = Client(
            self.server, address=("203.0.113.5", next(self.ports)),
            transport=ClientTransport.TCP, retry_stale=True, now=self.now,
        )  # fmt: skip
        return client

    def _allocate(self) -> Client:
        client = self._tcp_client()
        reply = client.call(Method.ALLOCATE, RequestedTransport(6))
        assert reply.message_class is MessageClass.SUCCESS, reply
        return client

    def _pick(self, index: int, state: ConnectionState | None = None) -> int | None:
        ids = sorted(
            cid for cid, c in self.server.tcp.connections.items()
            if state is None or c.state is state
        )  # fmt: skip
        return ids[index % len(ids)] if ids else None

    def _collect(self, actions: list[Action], *, timers: bool = False) -> None:
        for action in actions:
            if isinstance(action, ConnectPeer | AcceptPeer):
                self.made.add(action.connection_id)
            if isinstance(action, ClosePeerConnection):
                assert action.connection_id in self.made
                # A spliced connection has no deadline: only its allocation's end closes it.
                assert not (timers and action.connection_id in self.spliced)
                self.spliced.discard(action.connection_id)

    def step(self, step: tuple[object, ...]) -> None:
        server, client = self.server, self.client
        client.now = self.now
        kind = step[0]
        allocation = server.allocations.get(client.five_tuple)
        if kind == "connect":
            assert isinstance(step[1], int)
            peer = PEERS[step[1]]
            held = [] if allocation is None else list(server.tcp.allocations[allocation].values())
            request = client.request(Method.CONNECT, XorPeerAddress(*peer))
            actions = client.send_raw(encode_signed(request, client.key))
            self._collect(actions)
            made = [a for a in actions if isinstance(a, ConnectPeer)]
            reply = client.response(actions, request)
            if any(c.peer == peer for c in held):
                assert error_code(reply) == 446
            elif len(held) >= BOUND:
                assert error_code(reply) == 508
            else:
                assert len(made) == 1 and reply is None
        elif kind in ("connected", "failed"):
            assert isinstance(step[1], int)
            cid = self._pick(step[1], ConnectionState.CONNECTING)
            if cid is not None:
                report = (
                    server.peer_connected if kind == "connected" else server.peer_connect_failed
                )
                actions = report(cid, self.now)
                self._collect(actions)
                expected = ConnectionState.WAITING if kind == "connected" else None
                connection = server.tcp.connections.get(cid)
                assert (None if connection is None else connection.state) == expected
        elif kind == "permit":
            assert isinstance(step[1], int)
            client.permit(PEERS[step[1]])
        elif kind == "arrive":
            assert isinstance(step[1], int) and isinstance(step[2], int)
            if allocation is not None:
                host = PEERS[step[1]][0]
                permitted = host in allocation.permissions
                room = len(server.tcp.allocations[allocation]) < BOUND
                actions = server.peer_arrived(allocation.relayed, (host, step[2]), self.now)
                self._collect(actions)
                assert any(isinstance(a, AcceptPeer) for a in actions) == (permitted and room)
        elif kind in ("bind", "bind_unknown"):
            assert isinstance(step[1], int)
            cid = self._pick(step[1]) if kind == "bind" else step[1]
            if cid is not None:
                connection = server.tcp.connections.get(cid)
                waiting = connection is not None and connection.state is ConnectionState.WAITING
                data = self._tcp_client()
                reply = data.call(Method.CONNECTION_BIND, ConnectionId(cid))
                assert (reply.message_class is MessageClass.SUCCESS) == waiting
                if waiting:
                    self.spliced.add(cid)
                if not waiting:
                    assert error_code(reply) == 400
        elif kind == "closed":
            assert isinstance(step[1], int)
            cid = self._pick(step[1])
            if cid is not None:
                server.peer_connection_closed(cid)
                self.spliced.discard(cid)
                assert cid not in server.tcp.connections
        elif kind == "wait":
            assert isinstance(step[1], float)
            self.now += step[1]
            self._collect(run_timers(server, self.now), timers=True)
        else:  # end: Refresh 0, then a new allocation from a new connection
            if allocation is not None:
                request = client.request(Method.REFRESH, Lifetime(0))
                self._collect(client.send_raw(encode_signed(request, client.key)))
            self.client = self._allocate()

    def check(self) -> None:
        server, tcp = self.server, self.server.tcp
        live = set(server.allocations.values())
        assert set(tcp.allocations) <= live
        total = 0
        for allocation, held in tcp.allocations.items():
            assert len(held) <= BOUND
            total += len(held)
            for cid, connection in held.items():
                assert tcp.connections[cid] is connection
                assert connection.allocation is allocation
        assert total == len(tcp.connections)
        for connection in tcp.connections.values():
            if connection.state is ConnectionState.SPLICED:
                assert connection.data_connection is not None
            else:
                assert self.now < connection.deadline <= self.now + TIMEOUT
        sizes = tcp.sizes()
        assert sizes["peer_connection_timers"] <= 2 * sizes["peer_connections"] + 64


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, min_size=15, max_size=60))
def test_tcp_relay_state_rules_hold_over_any_run(steps: list[tuple[object, ...]]) -> None:
    run = Run()
    for step in steps:
        run.step(step)
        # What the runtime does when the core says so: timers run at `now`.
        run._collect(run_timers(run.server, run.now), timers=True)
        run.check()
