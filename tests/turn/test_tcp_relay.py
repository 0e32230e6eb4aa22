"""RFC 6062 TCP allocations in the pure core (`trelay.turn.tcp_relay`, `TurnServer`):
Allocate (§5.1), Connect (§5.2), a peer connecting in (§5.3), ConnectionBind (§5.4), the
connection timeout and bound, and the end of the allocation (§5.5)."""

from __future__ import annotations

from tests.helpers.turn_harness import (
    REALM,
    Client,
    assert_error,
    assert_success,
    error_code,
    make_server,
    run_timers,
)
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    ConnectionId,
    EvenPort,
    Lifetime,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message
from trelay.turn.actions import (
    AcceptPeer,
    Action,
    ClosePeerConnection,
    ConnectPeer,
    OpenRelay,
    SendToClient,
    SpliceConnections,
)
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.config import TurnConfig
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.stats import Drop, Quota
from trelay.turn.tcp_relay import ConnectionState

PEER = ("127.0.0.50", 8000)
OTHER_PEER = ("127.0.0.51", 8000)
TIMEOUT = 5.0


def config(**changes: object) -> TurnConfig:
    values: dict[str, object] = {
        "realm": REALM, "relay_host": "198.51.100.1", "tcp_connection_timeout": TIMEOUT,
    }  # fmt: skip
    values.update(changes)
    return TurnConfig(**values)  # type: ignore[arg-type]


def tcp_client(server: TurnServer, port: int = 50000, **kwargs: object) -> Client:
    return Client(
        server, address=("203.0.113.5", port), transport=ClientTransport.TCP,
        retry_stale=True, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def allocated(server: TurnServer | None = None) -> Client:
    c = tcp_client(server or make_server(config()))
    assert_success(c, c.call(Method.ALLOCATE, RequestedTransport(6)))
    return c


def connect(c: Client, peer: Address = PEER) -> tuple[Message, list[Action]]:
    """Send a Connect; return it and the actions (its answer comes later)."""
    request = c.request(Method.CONNECT, XorPeerAddress(*peer))
    return request, c.send_raw(encode_signed(request, c.key))


def answer(c: Client, actions: list[Action], request: Message) -> Message | None:
    return c.response(actions, request)


def connected(c: Client, peer: Address = PEER) -> int:
    """Connect to `peer` and report the runtime's success; return the connection id."""
    request, actions = connect(c, peer)
    (made,) = [a for a in actions if isinstance(a, ConnectPeer)]
    reply = answer(c, c.server.peer_connected(made.connection_id, c.now), request)
    assert_success(c, reply)
    assert reply is not None
    attribute = reply.get(ConnectionId)
    assert attribute is not None and attribute.value == made.connection_id
    return made.connection_id


def bind(c: Client, connection_id: int, port: int = 50001) -> tuple[Client, Message]:
    """A new data connection from the client's host sends ConnectionBind."""
    data = tcp_client(c.server, port, username=c.username, password=c.password, now=c.now)
    return data, data.call(Method.CONNECTION_BIND, ConnectionId(connection_id))


# --- Allocate (§5.1) --------------------------------------------------------------------


def test_tcp_allocate_over_tcp_asks_for_a_listening_socket() -> None:
    c = tcp_client(make_server(config()))
    c.auto_open = False
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(6))
    c.send_raw(encode_signed(request, c.key))
    (opened,) = c.opens
    assert opened.tcp
    actions = c.server.relay_opened(c.five_tuple, (opened.host, 40000), c.now)
    assert_success(c, c.response(actions, request))
    assert c.server.tcp.is_tcp(c.server.allocations[c.five_tuple])


def test_udp_allocate_over_tcp_is_not_a_tcp_allocation() -> None:
    c = tcp_client(make_server(config()))
    assert_success(c, c.allocate())
    assert not c.server.tcp.is_tcp(c.server.allocations[c.five_tuple])


def test_tcp_allocate_over_udp_is_400() -> None:
    c = Client(make_server(config()))
    assert_error(c, c.call(Method.ALLOCATE, RequestedTransport(6)), 400, signed=True)
    assert not c.server.allocations


def test_tcp_allocate_with_udp_only_attributes_is_400() -> None:
    extras: list[Attribute] = [EvenPort(False), ReservationToken(b"12345678")]
    for extra in extras:
        c = tcp_client(make_server(config()))
        assert_error(c, c.call(Method.ALLOCATE, RequestedTransport(6), extra), 400, signed=True)


def test_tcp_allocate_failed_bind_retries_as_tcp() -> None:
    server = make_server(config(port_range=(50000, 50010)))
    c = tcp_client(server)
    c.auto_open = False
    c.authenticate()
    c.send(c.request(Method.ALLOCATE, RequestedTransport(6)))
    retry = server.relay_failed(c.five_tuple, c.now)
    assert [a.tcp for a in retry if isinstance(a, OpenRelay)] == [True]


# --- Connect (§5.2) ---------------------------------------------------------------------


def test_connect_installs_the_permission_and_answers_once_connected() -> None:
    c = allocated()
    request, actions = connect(c)
    (made,) = [a for a in actions if isinstance(a, ConnectPeer)]
    allocation = c.server.allocations[c.five_tuple]
    assert (made.relayed, made.peer) == (allocation.relayed, PEER)
    assert answer(c, actions, request) is None  # not yet
    assert PEER[0] in allocation.permissions
    reply = answer(c, c.server.peer_connected(made.connection_id, c.now), request)
    assert_success(c, reply)
    assert reply is not None and reply.get(ConnectionId) == ConnectionId(made.connection_id)


def test_connect_failure_is_447() -> None:
    c = allocated()
    request, actions = connect(c)
    (made,) = [a for a in actions if isinstance(a, ConnectPeer)]
    reply = answer(c, c.server.peer_connect_failed(made.connection_id, c.now), request)
    assert_error(c, reply, 447, signed=True)
    assert not c.server.tcp.connections


def test_connect_timeout_is_447_and_closes_the_attempt() -> None:
    c = allocated()
    request, actions = connect(c)
    (made,) = [a for a in actions if isinstance(a, ConnectPeer)]
    assert run_timers(c.server, TIMEOUT - 0.1) == []
    timed_out = run_timers(c.server, TIMEOUT)
    assert ClosePeerConnection(made.connection_id) in timed_out
    assert_error(c, answer(c, timed_out, request), 447, signed=True)
    # The runtime's late success changes nothing but closing it.
    assert c.server.peer_connected(made.connection_id, TIMEOUT) == [
        ClosePeerConnection(made.connection_id)
    ]


def test_446_while_connecting_and_once_connected() -> None:
    c = allocated()
    connect(c)
    request, actions = connect(c)
    assert_error(c, answer(c, actions, request), 446, signed=True)
    assert connect(c, OTHER_PEER)[1]  # another peer is fine


def test_446_once_bound_and_again_possible_after_it_closes() -> None:
    c = allocated()
    connection_id = connected(c)
    bind(c, connection_id)
    request, actions = connect(c)
    assert_error(c, answer(c, actions, request), 446, signed=True)
    c.server.peer_connection_closed(connection_id)
    _, actions = connect(c)
    assert any(isinstance(a, ConnectPeer) for a in actions)


def test_connect_retransmitted_while_connecting_is_not_446() -> None:
    c = allocated()
    request, _ = connect(c)
    assert c.send_raw(encode_signed(request, c.key)) == []


def test_connect_to_a_denied_peer_is_403() -> None:
    server = make_server(config(), policy=PeerPolicy.from_strings())
    c = allocated(server)
    request, actions = connect(c, ("10.0.0.1", 80))
    assert_error(c, answer(c, actions, request), 403, signed=True)
    assert not c.server.allocations[c.five_tuple].permissions


def test_connect_without_peer_or_on_a_udp_allocation_is_400() -> None:
    c = allocated()
    assert_error(c, c.call(Method.CONNECT), 400, signed=True)
    u = tcp_client(make_server(config()))
    assert_success(u, u.allocate())
    assert_error(u, u.call(Method.CONNECT, XorPeerAddress(*PEER)), 400, signed=True)


def test_connect_to_the_other_family_is_443() -> None:
    c = allocated()
    assert_error(c, c.call(Method.CONNECT, XorPeerAddress("2001:db8::5", 80)), 443, signed=True)


def test_connect_without_an_allocation_is_437() -> None:
    c = tcp_client(make_server(config()))
    assert_error(c, c.call(Method.CONNECT, XorPeerAddress(*PEER)), 437, signed=True)


def test_peer_connection_bound_is_508() -> None:
    c = allocated(make_server(config(peer_connections_per_allocation=1)))
    connect(c)
    request, actions = connect(c, OTHER_PEER)
    assert_error(c, answer(c, actions, request), 508, signed=True)
    assert c.server.stats.quota_rejections[Quota.PEER_CONNECTIONS] == 1


def test_permission_bound_applies_to_connect() -> None:
    c = allocated(make_server(config(permissions_per_allocation=1, peers_per_request=1)))
    connect(c)
    request, actions = connect(c, OTHER_PEER)
    assert_error(c, answer(c, actions, request), 508, signed=True)
    assert c.server.stats.quota_rejections[Quota.PERMISSIONS] == 1


# --- a peer connecting in (§5.3) ----------------------------------------------------------


def test_peer_without_permission_is_refused() -> None:
    c = allocated()
    relayed = c.server.allocations[c.five_tuple].relayed
    assert c.server.peer_arrived(relayed, PEER, c.now) == []


def test_permitted_peer_gets_a_connection_attempt() -> None:
    c = allocated()
    assert_success(c, c.permit(PEER))
    relayed = c.server.allocations[c.five_tuple].relayed
    accept, attempt = c.server.peer_arrived(relayed, PEER, c.now)
    assert isinstance(accept, AcceptPeer) and (accept.relayed, accept.peer) == (relayed, PEER)
    assert isinstance(attempt, SendToClient) and attempt.five_tuple == c.five_tuple
    indication = decode_message(attempt.data)
    assert (indication.method, indication.message_class) == (
        Method.CONNECTION_ATTEMPT, MessageClass.INDICATION,
    )  # fmt: skip
    assert indication.get(XorPeerAddress) == XorPeerAddress(*PEER)
    assert indication.get(ConnectionId) == ConnectionId(accept.connection_id)
    _, reply = bind(c, accept.connection_id)
    assert reply.message_class is MessageClass.SUCCESS


def test_peer_past_the_bound_is_refused() -> None:
    c = allocated(make_server(config(peer_connections_per_allocation=1)))
    assert_success(c, c.permit(PEER))
    relayed = c.server.allocations[c.five_tuple].relayed
    assert c.server.peer_arrived(relayed, PEER, c.now)
    assert c.server.peer_arrived(relayed, ("127.0.0.50", 8001), c.now) == []


def test_peer_on_an_unknown_address_is_refused() -> None:
    assert make_server(config()).peer_arrived(("198.51.100.1", 1), PEER, 0.0) == []


def test_unbound_connection_closes_after_the_timeout() -> None:
    c = allocated()
    connection_id = connected(c)
    assert run_timers(c.server, TIMEOUT - 0.1) == []
    assert run_timers(c.server, TIMEOUT) == [ClosePeerConnection(connection_id)]
    _, reply = bind(c, connection_id)
    assert error_code(reply) == 400


# --- ConnectionBind (§5.4) ----------------------------------------------------------------


def test_connection_bind_splices_and_the_connection_outlives_the_timeout() -> None:
    c = allocated()
    connection_id = connected(c)
    data, reply = bind(c, connection_id)
    assert_success(data, reply)
    last = c.server.tcp.connections[connection_id]
    assert last.state is ConnectionState.SPLICED and last.data_connection == data.five_tuple
    assert run_timers(c.server, 10 * TIMEOUT) == []
    assert connection_id in c.server.tcp.connections


def test_connection_bind_emits_the_splice_after_its_answer() -> None:
    c = allocated()
    connection_id = connected(c)
    data = tcp_client(c.server, 50001)
    data.authenticate()  # a nonce for the data connection's own address
    request = data.request(Method.CONNECTION_BIND, ConnectionId(connection_id))
    actions = data.send_raw(encode_signed(request, data.key))
    assert [type(a) for a in actions] == [SendToClient, SpliceConnections]
    assert actions[1] == SpliceConnections(connection_id, data.five_tuple)
    assert_success(data, data.response(actions, request))


def test_connection_bind_errors() -> None:
    c = allocated()
    connection_id = connected(c)
    _, reply = bind(c, connection_id ^ 1, port=50002)  # no such id
    assert error_code(reply) == 400
    _, reply = bind(c, 0, port=50003)
    assert error_code(reply) == 400
    assert_error(c, c.call(Method.CONNECTION_BIND, ConnectionId(connection_id)), 400, signed=True)
    udp = Client(c.server, address=("203.0.113.5", 50004), retry_stale=True)
    assert_error(
        udp, udp.call(Method.CONNECTION_BIND, ConnectionId(connection_id)), 400, signed=True
    )
    other = tcp_client(c.server, 50005, username="bob", password="hunter2")
    reply = other.call(Method.CONNECTION_BIND, ConnectionId(connection_id))
    assert_error(other, reply, 441, signed=True)
    data, reply = bind(c, connection_id, port=50006)
    assert_success(data, reply)
    _, again = bind(c, connection_id, port=50007)  # bound already
    assert error_code(again) == 400


def test_connection_bind_unsigned_is_challenged() -> None:
    c = allocated()
    connection_id = connected(c)
    data = tcp_client(c.server, 50001)
    reply = data.send(
        data.request(Method.CONNECTION_BIND, ConnectionId(connection_id), sign=False), False
    )
    assert_error(data, reply, 401, signed=False)


# --- the allocation's end (§5.5) and what a TCP allocation does not do ----------------------


def test_the_allocations_end_closes_its_connections() -> None:
    c = allocated()
    bound_id = connected(c)
    bind(c, bound_id)
    _, actions = connect(c, OTHER_PEER)
    (connecting,) = [a.connection_id for a in actions if isinstance(a, ConnectPeer)]
    ended = c.server.connection_closed(c.five_tuple)
    closed = {a.connection_id for a in ended if isinstance(a, ClosePeerConnection)}
    assert closed == {bound_id, connecting}
    assert not c.server.tcp.connections and not c.server.tcp.allocations
    assert c.server.peer_connected(connecting, c.now) == [ClosePeerConnection(connecting)]


def test_refresh_zero_closes_the_connections() -> None:
    c = allocated()
    connection_id = connected(c)
    actions = c.send_raw(encode_signed(c.request(Method.REFRESH, Lifetime(0)), c.key))
    assert ClosePeerConnection(connection_id) in actions
    assert not c.server.tcp.connections


def test_no_channels_and_no_send_indications_on_a_tcp_allocation() -> None:
    c = allocated()
    assert_error(c, c.bind(0x4000, PEER), 400, signed=True)
    assert_success(c, c.permit(PEER))
    assert c.send_indication(PEER, b"x") == []
    assert c.server.stats.dropped[Drop.NO_PERMISSION] == 1


def test_connection_ids_are_unique_and_never_zero() -> None:
    draws = iter([0, 5, 5, 6])
    server = make_server(config())
    server.tcp._randbits = lambda bits: next(draws)
    c = allocated(server)
    first, second = connected(c), connected(c, OTHER_PEER)
    assert (first, second) == (5, 6)


def test_state_sizes_count_the_connections() -> None:
    c = allocated()
    connected(c)
    sizes = c.server.state_sizes()
    assert (sizes["tcp_allocations"], sizes["peer_connections"]) == (1, 1)


def test_connection_ids_come_from_the_servers_rng() -> None:
    first, second = make_server(config()), make_server(config())
    assert first.tcp._randbits(32) == second.tcp._randbits(32)


def test_tcp_allocations_turned_off_is_442() -> None:
    c = tcp_client(make_server(config(tcp_allocations=False)))
    assert_error(c, c.call(Method.ALLOCATE, RequestedTransport(6)), 442, signed=True)
    assert_success(c, c.allocate())  # UDP relaying over TCP as before


def test_a_new_policy_closes_connections_to_peers_it_denies() -> None:
    c = allocated()
    kept = connected(c, OTHER_PEER)
    denied = connected(c)
    request, actions = connect(c, ("127.0.0.50", 9000))  # still connecting
    (connecting,) = [a.connection_id for a in actions if isinstance(a, ConnectPeer)]
    c.server.use_policy(PeerPolicy.from_strings(deny=["127.0.0.50/32"], allow_loopback=True))
    closed = c.server.close_denied_peer_connections(c.now)
    assert {a.connection_id for a in closed if isinstance(a, ClosePeerConnection)} == {
        denied, connecting,
    }  # fmt: skip
    assert_error(c, answer(c, closed, request), 447, signed=True)
    assert set(c.server.tcp.connections) == {kept}
    assert c.five_tuple in c.server.allocations
