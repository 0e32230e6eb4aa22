"""TCP allocations (RFC 6062), the core's part: peer connections, their ids and timers.

Owns what RFC 6062 adds to a TURN server, sans I/O; the runtime owns the sockets
(`trelay.node.tcp_relay`) and reports back:

- which allocations are TCP allocations (§5.1; `allocate` makes them, over TCP or TLS
  only) and the peer connections each holds, by connection id;
- Connect (§5.2): XOR-PEER-ADDRESS present (400), of the allocation's family (443), a
  peer the policy permits (403, design §6), none already connecting or connected to it
  from this allocation (446), room under `peer_connections_per_allocation` and
  `permissions_per_allocation` (508). The peer's permission is installed (as coturn
  does; §5.3 accepts peers by permission) and the runtime is asked to connect
  (`ConnectPeer`); `peer_connected` answers success with CONNECTION-ID, and
  `peer_connect_failed` or `tcp_connection_timeout` seconds without either answer 447;
- a peer connecting in (§5.3, `peer_arrived`): kept (`AcceptPeer`) and announced to the
  client with a ConnectionAttempt indication (XOR-PEER-ADDRESS, CONNECTION-ID) when its
  IP has a permission and the bound has room; otherwise closed, and the client is told
  nothing;
- ConnectionBind (§5.4) on a new TCP/TLS connection, authenticated by the server with
  the allocation's username (441 for another): the CONNECTION-ID of a connection waiting
  for it (400 otherwise, and over UDP or on a connection that holds an allocation); the
  answer is followed by `SpliceConnections`, after which that client connection carries
  the peer's bytes as they are, both ways;
- a new peer policy (a reload, `withdraw_denied`) closes the connections to peers it
  denies, as `TurnServer.use_policy` withdraws their permissions and channels;
- timers (§5.2, §5.3): a connection still connecting, or connected and not bound, after
  `tcp_connection_timeout` seconds is closed (`ClosePeerConnection`, and 447 for a
  Connect). A spliced connection lives until either side closes
  (`peer_connection_closed`) or its allocation ends, which closes all of them (§5.5).

Connection ids are random 32-bit numbers (`randbits`, injected), never 0 and unique among
the live connections of this core (one per worker process); a Connect's answer is the
only place a client learns one, and a ConnectionBind must also pass authentication with
the allocation's username, so a guessed id binds nothing. With `--workers N` the top
byte names the worker (`worker`, `connection_worker`) and 24 bits are random: the
ConnectionBind's new connection may reach another worker, which proxies it to this one
(`trelay.node.bind_proxy`).

Invariants (checked by the state-machine tests): every connection belongs to a live TCP
allocation and is in both maps; an allocation's connections are at most its bound; at
most one connection per peer address and allocation is connecting or waiting for its
ConnectionBind via Connect (446); the timer heap holds at most twice its live entries
plus `_SLACK`.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    ConnectionId,
    DontFragment,
    EvenPort,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import ErrorCode, MessageClass, Method, TransportProtocol
from trelay.stun.message import Message, encode_message, new_transaction_id
from trelay.turn import responses
from trelay.turn.actions import (
    AcceptPeer,
    Action,
    ClosePeerConnection,
    ConnectPeer,
    SendToClient,
    SpliceConnections,
)
from trelay.turn.addressing import Address, ClientTransport, FiveTuple, is_ipv6
from trelay.turn.allocation import Allocation
from trelay.turn.auth import Authenticated
from trelay.turn.policy import PeerPolicy
from trelay.turn.request_context import RequestContext
from trelay.turn.responses import Reply
from trelay.turn.stats import Quota
from trelay.turn.timers import TimerKind

# Stale timer entries tolerated beyond the live ones before the heap is rebuilt.
_SLACK = 64


def wants_tcp(request: Message) -> bool:
    """REQUESTED-TRANSPORT TCP: an Allocate for a TCP allocation (§5.1)."""
    transport = request.get(RequestedTransport)
    return transport is not None and transport.value == TransportProtocol.TCP


def tcp_allocate_problem(request: Message, client: ClientTransport) -> str | None:
    """Why a TCP Allocate gets 400 (§5.1 checks 2 and 3), or None."""
    if not client.is_stream:
        return "TCP relaying needs a TCP or TLS connection"
    if any(request.get(kind) is not None for kind in (DontFragment, EvenPort, ReservationToken)):
        return "DONT-FRAGMENT, EVEN-PORT and RESERVATION-TOKEN are for UDP relaying"
    return None


class ConnectionState(Enum):
    CONNECTING = "connecting"  # Connect received, the runtime is connecting (§5.2)
    WAITING = "waiting"  # connected, waiting for its ConnectionBind (§5.2, §5.3)
    SPLICED = "spliced"  # bound to a client data connection: raw bytes (§5.4)


@dataclass(slots=True, eq=False)
class PeerConnection:
    """One TCP connection between a TCP allocation's relayed address and a peer."""

    connection_id: int
    allocation: Allocation
    peer: Address
    state: ConnectionState
    deadline: float  # of CONNECTING and WAITING; SPLICED connections have none
    request: Message | None = None  # the Connect that made it, until it is answered
    data_connection: FiveTuple | None = None  # once SPLICED
    timer: int = 0  # the sequence number of its live timer entry


class TcpRelay:
    """The peer connections of every TCP allocation of one `TurnServer`."""

    __slots__ = ("_heap", "_randbits", "_sequence", "_worker", "allocations", "connections")

    def __init__(
        self, randbits: Callable[[int], int] = secrets.randbits, worker: int | None = None
    ) -> None:
        if worker is not None and not 0 <= worker <= 0xFF:
            raise ValueError(f"worker index {worker} outside 0..255")
        self._randbits = randbits
        self._worker = worker
        # TCP allocations -> their connections by id; and every connection by id.
        self.allocations: dict[Allocation, dict[int, PeerConnection]] = {}
        self.connections: dict[int, PeerConnection] = {}
        self._heap: list[tuple[float, int, int]] = []  # (deadline, sequence, connection id)
        self._sequence = 0

    # --- allocations --------------------------------------------------------------------

    def add(self, allocation: Allocation) -> None:
        """`allocation` is a TCP allocation (§5.1): peers may connect to it."""
        self.allocations[allocation] = {}

    def is_tcp(self, allocation: Allocation) -> bool:
        return allocation in self.allocations

    def allocation_ended(self, allocation: Allocation) -> list[Action]:
        """§5.5: an allocation's end closes its peer and data connections."""
        held = self.allocations.pop(allocation, None)
        if not held:
            return []
        for connection_id in held:
            del self.connections[connection_id]
        return [ClosePeerConnection(connection_id) for connection_id in held]

    # --- Connect (§5.2) -------------------------------------------------------------------

    def connect(
        self,
        context: RequestContext,
        policy: PeerPolicy,
        request: Message,
        allocation: Allocation,
        now: float,
    ) -> Reply | ConnectPeer | None:
        """An error to answer now, the connection to make, or None (a repeat in flight)."""
        key, software, config = allocation.key, context.software, context.config
        held = self.allocations.get(allocation)
        peer = request.get(XorPeerAddress)
        reason = None
        if held is None:
            reason = "Connect needs a TCP allocation"
        elif peer is None:
            reason = "XOR-PEER-ADDRESS missing"
        if reason is not None:
            return responses.error(request, ErrorCode.BAD_REQUEST, software, key, reason=reason)
        assert held is not None and peer is not None
        if is_ipv6(peer.host) != is_ipv6(allocation.relayed[0]):
            return responses.error(request, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH, software, key)
        if not policy.permits_endpoint(*peer.address):
            return responses.error(request, ErrorCode.FORBIDDEN, software, key)
        for connection in held.values():
            if connection.peer == peer.address:
                pending = connection.request
                if pending is not None and pending.transaction_id == request.transaction_id:
                    return None  # the same Connect again while it is being made
                return responses.error(request, ErrorCode.CONNECTION_ALREADY_EXISTS, software, key)
        bound = config.peer_connections_per_allocation
        if bound and len(held) >= bound:
            return _over_bound(context, request, key, Quota.PEER_CONNECTIONS)
        permitted, limit = allocation.permissions, config.permissions_per_allocation
        if limit and peer.host not in permitted and len(permitted) >= limit:
            return _over_bound(context, request, key, Quota.PERMISSIONS)
        allocation.permit(peer.host, now + config.permission_lifetime)
        context.timers.schedule(
            allocation.permissions[peer.host], TimerKind.PERMISSION, allocation, peer.host
        )
        connection = self._new(allocation, peer.address, ConnectionState.CONNECTING, now, context)
        connection.request = request
        return ConnectPeer(connection.connection_id, allocation.relayed, peer.address)

    def peer_connected(
        self, context: RequestContext, connection_id: int, now: float
    ) -> list[Action]:
        """The runtime connected a Connect's peer: answer success, wait for the bind."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.state is not ConnectionState.CONNECTING:
            return [ClosePeerConnection(connection_id)]  # timed out or ended meanwhile
        request, allocation = connection.request, connection.allocation
        assert request is not None
        connection.request = None
        self._wait(connection, ConnectionState.WAITING, now, context)
        attributes = (ConnectionId(connection_id),)
        reply = responses.success(request, attributes, context.software, allocation.key)
        return context.reply(request, allocation.five_tuple, now, reply)

    def peer_connect_failed(
        self, context: RequestContext, connection_id: int, now: float
    ) -> list[Action]:
        """The runtime could not connect a Connect's peer: 447."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.state is not ConnectionState.CONNECTING:
            return []
        self._forget(connection)
        return self._connect_failed(context, connection, now)

    # --- a peer connecting in (§5.3) ----------------------------------------------------

    def peer_arrived(
        self, context: RequestContext, allocation: Allocation, peer: Address, now: float
    ) -> list[Action]:
        """A peer connected to a TCP allocation's relayed address: `AcceptPeer` and a
        ConnectionAttempt to the client, or nothing (the runtime closes it)."""
        held = self.allocations.get(allocation)
        if held is None or peer[0] not in allocation.permissions:
            return []
        bound = context.config.peer_connections_per_allocation
        if bound and len(held) >= bound:
            context.stats.quota_rejections[Quota.PEER_CONNECTIONS] += 1
            return []
        connection = self._new(allocation, peer, ConnectionState.WAITING, now, context)
        connection_id = connection.connection_id
        indication = Message(
            Method.CONNECTION_ATTEMPT,
            MessageClass.INDICATION,
            new_transaction_id(),
            (XorPeerAddress(peer[0], peer[1]), ConnectionId(connection_id)),
        )
        return [
            AcceptPeer(connection_id, allocation.relayed, peer),
            SendToClient(allocation.five_tuple, encode_message(indication)),
        ]

    # --- ConnectionBind (§5.4) ----------------------------------------------------------

    def connection_bind(
        self,
        context: RequestContext,
        request: Message,
        five_tuple: FiveTuple,
        auth: Authenticated,
        holds_allocation: bool,
        now: float,
    ) -> list[Action]:
        """Bind the client connection `five_tuple` to a waiting peer connection."""
        key, software = auth.credential.key, context.software
        attribute = request.get(ConnectionId)
        connection = None if attribute is None else self.connections.get(attribute.value)
        reason = None
        if five_tuple.transport is ClientTransport.UDP:
            reason = "ConnectionBind needs a TCP or TLS connection"
        elif holds_allocation:
            reason = "ConnectionBind on a control connection"
        elif attribute is None:
            reason = "CONNECTION-ID missing"
        elif connection is None or connection.state is not ConnectionState.WAITING:
            reason = "No connection waiting with this CONNECTION-ID"
        if reason is not None:
            reply = responses.error(request, ErrorCode.BAD_REQUEST, software, key, reason=reason)
            return context.reply(request, five_tuple, now, reply)
        assert connection is not None
        if auth.username != connection.allocation.username:
            reply = responses.error(request, ErrorCode.WRONG_CREDENTIALS, software, key)
            return context.reply(request, five_tuple, now, reply)
        connection.state = ConnectionState.SPLICED
        connection.data_connection = five_tuple
        connection.timer = 0  # no deadline: it lives as long as both sides and the allocation
        reply = responses.success(request, (), software, key)
        return [
            *context.reply(request, five_tuple, now, reply),
            SpliceConnections(connection.connection_id, five_tuple),
        ]

    def withdraw_denied(
        self, context: RequestContext, policy: PeerPolicy, now: float
    ) -> list[Action]:
        """Close the connections to peers `policy` denies (a reload changed it, design §6);
        a Connect still being made is answered 447. The allocations live on."""
        actions: list[Action] = []
        for connection in list(self.connections.values()):
            if policy.permits_endpoint(*connection.peer):
                continue
            self._forget(connection)
            actions.append(ClosePeerConnection(connection.connection_id))
            if connection.state is ConnectionState.CONNECTING:
                actions += self._connect_failed(context, connection, now)
        return actions

    def peer_connection_closed(self, connection_id: int) -> None:
        """The runtime closed a peer connection (either side of a splice ended)."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            self._forget(connection)

    # --- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, context: RequestContext, now: float) -> list[Action]:
        """Close the connections still connecting, or not bound, at their deadline."""
        actions: list[Action] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, sequence, connection_id = heapq.heappop(heap)
            connection = self.connections.get(connection_id)
            if connection is None or connection.timer != sequence:
                continue  # stale: the connection moved on or ended
            self._forget(connection)
            actions.append(ClosePeerConnection(connection_id))
            if connection.state is ConnectionState.CONNECTING:
                actions += self._connect_failed(context, connection, now)
        return actions

    def sizes(self) -> dict[str, int]:
        """The length of each table (`TurnServer.state_sizes`)."""
        return {
            "tcp_allocations": len(self.allocations),
            "peer_connections": len(self.connections),
            "peer_connection_timers": len(self._heap),
        }

    # --- internals ----------------------------------------------------------------------

    def _new_id(self) -> int:
        if self._worker is None:
            return self._randbits(32)
        return self._worker << 24 | self._randbits(24)  # the top byte names the worker

    def _new(
        self,
        allocation: Allocation,
        peer: Address,
        state: ConnectionState,
        now: float,
        context: RequestContext,
    ) -> PeerConnection:
        connection_id = self._new_id()
        while connection_id == 0 or connection_id in self.connections:
            connection_id = self._new_id()
        connection = PeerConnection(connection_id, allocation, peer, state, now)
        self.connections[connection_id] = connection
        self.allocations[allocation][connection_id] = connection
        self._wait(connection, state, now, context)
        return connection

    def _wait(
        self,
        connection: PeerConnection,
        state: ConnectionState,
        now: float,
        context: RequestContext,
    ) -> None:
        """Move `connection` to `state`, closed at `tcp_connection_timeout` from now."""
        connection.state = state
        connection.deadline = now + context.config.tcp_connection_timeout
        self._sequence += 1
        connection.timer = self._sequence
        heapq.heappush(self._heap, (connection.deadline, self._sequence, connection.connection_id))
        if len(self._heap) > 2 * len(self.connections) + _SLACK:
            live = self.connections
            self._heap[:] = [
                entry for entry in self._heap
                if (c := live.get(entry[2])) is not None and c.timer == entry[1]
            ]  # fmt: skip
            heapq.heapify(self._heap)

    def _forget(self, connection: PeerConnection) -> None:
        del self.connections[connection.connection_id]
        held = self.allocations.get(connection.allocation)
        if held is not None:
            held.pop(connection.connection_id, None)

    @staticmethod
    def _connect_failed(
        context: RequestContext, connection: PeerConnection, now: float
    ) -> list[Action]:
        request, allocation = connection.request, connection.allocation
        if request is None:
            return []
        reply = responses.error(
            request, ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE, context.software, allocation.key
        )
        return context.reply(request, allocation.five_tuple, now, reply)


def _over_bound(context: RequestContext, request: Message, key: bytes, quota: Quota) -> Reply:
    """508 Insufficient Capacity, counted by the bound that refused."""
    context.stats.quota_rejections[quota] += 1
    return responses.error(
        request, ErrorCode.INSUFFICIENT_CAPACITY, context.software, key,
        reason="Too many peer connections" if quota is Quota.PEER_CONNECTIONS
        else "Too many permissions",
    )  # fmt: skip


def connection_worker(connection_id: int) -> int:
    """The worker a CONNECTION-ID of a `TcpRelay(worker=...)` names (its top byte)."""
    return connection_id >> 24 & 0xFF
