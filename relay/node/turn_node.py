"""The TURN runtime: runs a `trelay.turn.server.TurnServer` on trio sockets.

Owns everything between the pure core and the kernel for TURN (RFC 8656):

- executing the core's actions: replies to clients (UDP sockets or stream
  connections), datagrams to peers, binding and closing relay sockets; a reply on
  another 5-tuple than its request's (RFC 5780's CHANGE-REQUEST and RESPONSE-PORT,
  `trelay.turn.nat_discovery`) leaves from the UDP listener socket its `server` names;
- one relay socket per allocation, read through the node's data plane
  (`trelay.node.data_plane`: one epoll set of every datagram socket, the UDP listeners'
  too, drained in trio's idle wait or by one task), so ending an allocation takes its
  sockets out and closes them at once (design §4); bound as the core asks
  (`trelay.node.relay_ports`: even ports for EVEN-PORT with or without a port range);
- port reservations (RFC 8656 §7.2, EVEN-PORT R=1): the port+1 socket, held bound and
  unread until the core redeems it (`OpenRelay.reserved`: it becomes that Allocate's
  relay socket) or closes it (`CloseRelay` when its 30 s run out);
- dual allocations (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY, `OpenRelay.dual_host`): a
  second relay socket of the other family, read like the first, both sharing the
  allocation's senders, whose `transmit` then picks the socket by the peer's family (a
  single-family allocation's stays the socket's own `sendto`); a channel's connected
  socket is bound on the relayed address of its peer's family;
- a relay socket that cannot be made for lack of descriptors (EMFILE/ENFILE) is
  reported to the core like any bind failure (it answers 508) and counted and logged
  at a bounded rate by the node's `exhaustion` (`trelay.node.exhaustion`), which the
  TCP/TLS accept loops share;
- the data path both ways (its batch readers are in `trelay.node.data_path`), with no
  checkpoint, log line or action object per packet;
- TCP allocations (RFC 6062): their listening relay sockets, peer connections and
  splices with client data connections (`tcp_relays`, `trelay.node.tcp_relay`);
- mobility (RFC 8016): when the core moves an allocation to its client's new 5-tuple
  (`AllocationMoved`), the relay's readers are rebuilt to deliver there; with workers,
  a moved client's Refresh that reached the wrong worker is handed to the owner, which
  captures the client's datagrams (`steering`, `trelay.node.mobility_steering`), as is
  an Allocate with another worker's RESERVATION-TOKEN (RFC 8656 §7.2);
- the timer task that sleeps until the core's next deadline;
- session admin (`sessions`, `end_sessions`; `trelay.node.sessions`): the core's view of
  each allocation with the traffic its relay counted, and ending allocations on an
  operator's request;
- usage records (`usage`, `trelay.node.usage`): each allocation is metered from its
  relay socket's bind to its `CloseRelay`, the one place every end passes;
- bandwidth limits (`bandwidth`, `trelay.turn.bandwidth`, `TurnConfig.bandwidth`): each
  allocation's meter is set on its senders at `AllocationCreated` and taken at
  `AllocationEnded`; the data path spends from it, as do Send indications and stream
  clients' ChannelData (`_to_peer`), and RFC 6062 splices wait on it; a reload retunes
  it (`use_bandwidth`);
- graceful drain on shutdown (`drain`, design §4): the core refuses new allocations (508,
  or 300 to an alternate server), every existing one keeps relaying, refreshing and
  binding until it ends or the drain's timeout runs out, `end_drain_now` cuts it short,
  and whatever is left is ended (reason `shutdown`).

Clocks: `trio.current_time()` is the core's `now` (so tests can use MockClock), and
`time.time()` its wall clock (nonces and TURN REST expiry must agree across processes).
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

import trio

from trelay.node.bind_proxy import BindProxy
from trelay.node.data_path import (
    Buffer,
    ClientReader,
    DataPathCounters,
    PeerBuffer,
    PeerReader,
    RelaySenders,
    Route,
    Stalled,
    TransportCounters,
)
from trelay.node.data_plane import DataPlane
from trelay.node.datagram_batch import (
    DatagramBatch,
    UdpListenerStats,
    kernel_drops,
)
from trelay.node.exhaustion import CHANNEL_SOCKET, EXHAUSTION_ERRNOS, RELAY_SOCKET, Exhaustion
from trelay.node.frontend import Handover
from trelay.node.gso import GroState, SegmentingSocket
from trelay.node.mobility_steering import ClientSteering
from trelay.node.relay_ports import bind_relay, bind_relay_socket
from trelay.node.sessions import Session, Traffic
from trelay.node.stream_listener import HandshakeFailures
from trelay.node.tcp_relay import TcpRelays
from trelay.node.usage import UsageRecorder
from trelay.stun.message import decode_message_type
from trelay.turn.actions import (
    Action,
    AllocationCreated,
    AllocationEnded,
    AllocationMoved,
    ClosePeerConnection,
    CloseRelay,
    ConnectPeer,
    OpenRelay,
    SendToClient,
    SendToPeer,
    SpliceConnections,
)
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation
from trelay.turn.bandwidth import Bandwidth, BandwidthLimits
from trelay.turn.server import TurnServer
from trelay.turn.stats import Drop

log = logging.getLogger(__name__)

# Connected sockets per allocation, one per channel in use (most calls need one or two).
MAX_CONNECTED_CHANNELS = 8
# The client transports whose ConnectionBind a worker may proxy (RFC 6062 §5.4).
_STREAMS = frozenset({ClientTransport.TCP, ClientTransport.TLS})
# Linux: (level, option, DF on, the default) per family. IPv4 has no IP_MTU_DISCOVER in
# Python's socket module; values from <linux/in.h>: IP_MTU_DISCOVER 10, IP_PMTUDISC_DO 2,
# IP_PMTUDISC_WANT 1 (the default: DF on datagrams that fit, local fragmentation above).
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO, _IP_PMTUDISC_WANT = 10, 2, 1
_DONT_FRAGMENT = {
    socket.AF_INET: (socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO, _IP_PMTUDISC_WANT),
    socket.AF_INET6: (socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1, 0),
}
DONT_FRAGMENT_SUPPORTED = sys.platform == "linux"
# How often a running drain reports the allocations it still waits for.
DRAIN_PROGRESS_SECONDS = 10.0


class DrainEnd(StrEnum):
    """Why a drain ended (what the last log line of a stopping node says)."""

    ALL_ENDED = "all allocations ended"
    TIMEOUT = "the drain timeout ran out"
    ENDED_NOW = "ended at once on request"


@dataclass(slots=True)
class _Relay:
    """The runtime's record of one allocation's relay socket; its `senders` are what the
    core keeps as `Allocation.runtime` for the data path."""

    sock: socket.socket
    plane: DataPlane
    relayed: TransportCounters
    senders: RelaySenders
    allocation: Allocation | None = None
    # How a frame reaches the client; None while nothing reads (a stream client gone).
    deliver: Callable[[Buffer], object] | None = None
    connected: list[socket.socket] = field(default_factory=list)
    # GSO sends (`trelay.node.gso`): the relay socket's, and the UDP listener's towards
    # the client (None for a TCP/TLS client).
    out: SegmentingSocket | None = None
    client_out: SegmentingSocket | None = None
    # Each socket's UDP_GRO (by descriptor), kept across the readers a move rebuilds.
    gro: dict[int, GroState] = field(default_factory=dict)

    def kernel_drops(self) -> int:
        """What the kernel dropped for this relay's sockets (`kernel_drops`)."""
        return sum(kernel_drops(sock) for sock in (self.sock, *self.connected))

    def close(self) -> None:
        """Close every socket now (out of the data plane first): the relay port is free
        before anything else runs."""
        for sock in (self.sock, *self.connected):
            if sock.fileno() != -1:
                self.plane.discard(sock)
                sock.close()


@dataclass(slots=True)
class StreamConnection:
    """A TCP/TLS client connection as the node sees it (a `trelay.node.frontend.StreamSession`)."""

    node: TurnNode
    five_tuple: FiveTuple
    outbox: trio.MemorySendChannel[bytes]
    dropped: int = 0

    def frame(self, channel: int | None, data: bytes) -> bool:
        return self.node.stream_frame(self, channel, data)

    def framing_lost(self, channel: int) -> bool:
        allocation = self.node.server.allocations.get(self.five_tuple)
        if allocation is not None and channel in allocation.channels:
            return False
        self.node.counters.dropped[Drop.LOST_FRAMING] += 1
        return True

    def keeps_alive(self) -> bool:
        return self.five_tuple in self.node.server.allocations

    def handover(self) -> Handover | None:
        """Set once a ConnectionBind spliced this connection (RFC 6062 §5.4), or made it
        a proxy to the worker holding its peer connection (`trelay.node.bind_proxy`)."""
        proxy = self.node.proxied.get(self.five_tuple)
        return proxy or self.node.tcp_relays.handover_for(self.five_tuple)

    def close(self) -> None:
        self.node.stream_closed(self)


@dataclass
class TurnNode:
    server: TurnServer
    nursery: trio.Nursery
    counters: DataPathCounters = field(default_factory=DataPathCounters)
    peer_buffer: PeerBuffer = field(default_factory=PeerBuffer)
    # Every datagram socket's reader (listeners, relays, channels), in one epoll set
    # (started with the first socket: no task starts from a constructor).
    data_plane: DataPlane = field(default_factory=DataPlane)
    _data_plane_started: bool = False
    udp_sockets: dict[Address, socket.socket] = field(default_factory=dict)
    # Each UDP listener's GSO sends to its clients (`trelay.node.gso`).
    udp_outs: dict[Address, SegmentingSocket] = field(default_factory=dict)
    streams: dict[FiveTuple, StreamConnection] = field(default_factory=dict)
    # Failed TLS handshakes on the node's TLS listeners (counted and logged there).
    tls_handshake_failures: HandshakeFailures = field(default_factory=HandshakeFailures)
    # Connections, relay and channel sockets refused for lack of descriptors (or socket
    # memory): counted and logged at a bounded rate (`trelay.node.exhaustion`).
    exhaustion: Exhaustion = field(default_factory=Exhaustion)
    # Usage records (`trelay.node.usage`): metered from relay open to CloseRelay.
    usage: UsageRecorder = field(default_factory=UsageRecorder)
    _relays: dict[Address, _Relay] = field(default_factory=dict)
    _tcp_relays: TcpRelays | None = None
    # Port reservations (EVEN-PORT R=1): held, unread, until redeemed or closed.
    _reserved: dict[Address, socket.socket] = field(default_factory=dict)
    # RFC 8016 across the workers of `--workers N` (`trelay.node.mobility_steering`);
    # None in a single process. The sockets capturing moved clients, by relayed address
    # (one per allocation at most), and what their readers count, as a listener's.
    steering: ClientSteering | None = None
    # RFC 6062 across workers (`trelay.node.bind_proxy`); None in a single process. The
    # data connections being proxied to the worker their ConnectionBind names.
    bind_proxy: BindProxy | None = None
    proxied: dict[FiveTuple, Handover] = field(default_factory=dict)
    _captured: dict[Address, socket.socket] = field(default_factory=dict)
    captured_stats: UdpListenerStats = field(default_factory=UdpListenerStats)
    # Kernel drops (`kernel_drops`): of relay sockets already closed, and what each UDP
    # listener's socket had dropped when this node took it (a worker's is inherited:
    # its predecessor's drops are counted already).
    _closed_drops: int = 0
    _listener_drops_before: dict[Address, int] = field(default_factory=dict)
    _timer_scope: trio.CancelScope | None = None
    _all_ended: trio.Event = field(default_factory=trio.Event)
    _drain_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _ended_now: bool = False
    # Bandwidth meters per allocation, buckets per identity and for the node.
    bandwidth: Bandwidth = field(init=False)

    def __post_init__(self) -> None:
        # The limits at start; a reload's go through `use_bandwidth`.
        self.bandwidth = Bandwidth(self.server.config.bandwidth)

    def use_bandwidth(self, limits: BandwidthLimits) -> None:
        """New bandwidth limits (a reload): every meter retuned, its buckets kept; the
        core's configuration says them too, so it stays the one account of the limits."""
        server = self.server
        server.use_config(replace(server.config, bandwidth=limits))
        self.bandwidth.retune(limits)

    @property
    def tcp_relays(self) -> TcpRelays:
        """The TCP allocations' sockets (RFC 6062, `trelay.node.tcp_relay`)."""
        if self._tcp_relays is None:
            self._tcp_relays = TcpRelays(
                self.server, self.nursery, self._execute, self.counters, self.exhaustion,
                self.usage,
            )  # fmt: skip
        return self._tcp_relays

    # --- clients over UDP ---------------------------------------------------------------

    def datagram_plane(self) -> DataPlane:
        """The node's data plane, its task started (in the node's nursery) on first use:
        the UDP listeners' sockets join it, as every relay and channel socket does."""
        if not self._data_plane_started:
            self._data_plane_started = True
            self.nursery.start_soon(self.data_plane.run)
        return self.data_plane

    def udp_listener(
        self, sock: socket.socket, server_address: Address, stats: UdpListenerStats
    ) -> DatagramBatch:
        """The batch reader of the UDP listener bound at `server_address`; it reads with
        UDP_GRO while clients send bursts of one flow (`GroState`, per socket)."""
        self.udp_sockets[server_address] = sock
        self.udp_outs[server_address] = SegmentingSocket(sock, self.counters.gso)
        self._listener_drops_before[server_address] = kernel_drops(sock)
        table = self.server.client_table(ClientTransport.UDP, server_address)
        gro = GroState(sock, allowed=True)
        return ClientReader(sock, server_address, stats, table, self.counters, self, gro).batch

    # --- clients over TCP/TLS -----------------------------------------------------------

    def stream_frame(self, connection: StreamConnection, channel: int | None, data: bytes) -> bool:
        """One deframed frame from a stream client; replies go to its outbox.

        False for ChannelData on a channel not bound on this connection: over a stream
        that is lost framing, not a late packet (`trelay.node.stream_listener` closes
        the connection); over UDP the same is dropped as `Drop.NO_CHANNEL`."""
        five_tuple = connection.five_tuple
        if channel is None:
            reply = self.handle_stun(data, five_tuple)
            if reply is not None:
                self._to_stream(connection, reply)
            return True
        allocation = self.server.allocations.get(five_tuple)
        peer = None if allocation is None else allocation.channels.get(channel)
        if allocation is None or peer is None:
            self.counters.dropped[Drop.LOST_FRAMING] += 1
            return False
        self._to_peer(self._relays[allocation.relayed_for(peer[0])], data, peer)
        return True

    def stream_session(
        self,
        transport: ClientTransport,
        client: Address,
        server: Address,
        outbox: trio.MemorySendChannel[bytes],
    ) -> StreamConnection:
        connection = StreamConnection(self, FiveTuple(transport, client, server), outbox)
        self.streams[connection.five_tuple] = connection
        return connection

    def stream_closed(self, connection: StreamConnection) -> None:
        """RFC 8656 §3.1: the allocation of a TCP/TLS connection ends with it."""
        self.streams.pop(connection.five_tuple, None)
        self.proxied.pop(connection.five_tuple, None)  # its handover was taken already
        self._execute(self.server.connection_closed(connection.five_tuple))

    def _to_stream(self, connection: StreamConnection, data: bytes) -> bool:
        """Queue `data` for the connection's writer; False if it was dropped."""
        try:
            connection.outbox.send_nowait(data)
        except trio.WouldBlock:
            connection.dropped += 1  # the writer is stalled; its send timeout will close it
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        else:
            return True
        return False

    # --- the control path ---------------------------------------------------------------

    def handle_stun(self, data: bytes, five_tuple: FiveTuple) -> bytes | None:
        """Run a STUN message through the core; the reply to its sender is returned."""
        steering = self.steering
        if (
            steering is not None
            and five_tuple.transport is ClientTransport.UDP
            and five_tuple not in self.server.allocations
        ):
            owner = steering.owner(data)
            if owner is not None:  # RFC 8016: another worker's client, moved here
                steering.hand_over(owner, five_tuple, data)
                return None
        proxy = self.bind_proxy
        if (
            proxy is not None
            and five_tuple.transport in _STREAMS
            and five_tuple not in self.server.allocations
        ):
            owner = proxy.owner(data)
            if owner is not None:  # RFC 6062: another worker's peer connection
                self.proxied[five_tuple] = proxy.handover(five_tuple, owner, data)
                return None
        started = time.perf_counter()
        actions = self.server.handle_message(data, five_tuple, trio.current_time())
        if len(data) >= 20 and not (data[0] & 0xC1 or data[1] & 0x10):  # a request (§5)
            method = decode_message_type(int.from_bytes(data[:2]))[0]
            self.server.stats.observe_request(method, time.perf_counter() - started)
        reply = None
        rest: list[Action] = []
        for action in actions:
            if isinstance(action, SendToClient) and action.five_tuple == five_tuple:
                reply = action.data
            else:
                rest.append(action)
        self._execute(rest)
        self._rearm_timer()
        return reply

    def _execute(self, actions: list[Action]) -> None:
        # What each relay closed here relayed, for its "allocation ended" line (the core
        # sends AllocationEnded right after CloseRelay).
        closed: dict[Address, RelaySenders] = {}
        for action in actions:
            if isinstance(action, SendToPeer):
                self._send_to_peer(action)
            elif isinstance(action, SendToClient):
                self._send_to_client(action.five_tuple, action.data)
            elif isinstance(action, OpenRelay):
                self._open_relay(action)
            elif isinstance(action, ConnectPeer | SpliceConnections | ClosePeerConnection):
                self.tcp_relays.run(action)  # RFC 6062
            elif isinstance(action, CloseRelay):
                tcp = self.tcp_relays.close_listener(action.relayed)  # a TCP allocation's
                if tcp is not None:
                    closed[action.relayed] = tcp
                relay = self._relays.pop(action.relayed, None)
                self._release_capture(action.relayed)
                held = self._reserved.pop(action.relayed, None)
                if held is not None:  # a reservation expired (or the server stopped)
                    held.close()
                if relay is not None:
                    self._closed_drops += relay.kernel_drops()  # one getsockopt each
                    # At once, not when the task unwinds: the port pool may hand the
                    # port to the next Allocate in this very batch.
                    relay.close()
                    closed[action.relayed] = relay.senders
                    self.usage.ended(action.relayed)  # every end comes here, once
            elif isinstance(action, AllocationCreated):
                created = self.server.by_relayed.get(action.relayed)
                if created is not None and isinstance(created.runtime, RelaySenders):
                    self.bandwidth.open(created.runtime, created.identity)
                log.info(
                    "allocation created",
                    extra={
                        "client": action.five_tuple.client,
                        "relayed": action.relayed,
                        "transport": action.five_tuple.transport,
                        "username": action.username,  # trelay.ops.logs hides it unless allowed
                        "lifetime": action.lifetime,
                    },
                )
            elif isinstance(action, AllocationMoved):
                self._client_moved(action)
            elif isinstance(action, AllocationEnded):
                if self.server.draining and not self.server.allocation_count:
                    self._all_ended.set()
                senders = closed.pop(action.relayed, None)
                if senders is not None:
                    self.bandwidth.close(senders)
                traffic = Traffic.of(senders)
                log.info(
                    "allocation ended %s",
                    action.reason.value,
                    extra={
                        "client": action.five_tuple.client,
                        "relayed": action.relayed,
                        "transport": action.five_tuple.transport,
                        "username": action.username,
                        "reason": action.reason,
                        "to_peer_bytes": traffic.client_to_peer_bytes,
                        "to_client_bytes": traffic.peer_to_client_bytes,
                    },
                )

    def _send_to_peer(self, action: SendToPeer) -> None:
        relay = self._relays.get(action.relayed)
        if relay is None:
            return
        if not action.dont_fragment:
            self._to_peer(relay, action.data, action.peer)
            return
        # Send indications only (rare): DF for this one datagram, then the default again.
        level, option, on, off = _DONT_FRAGMENT[relay.sock.family]
        relay.sock.setsockopt(level, option, on)
        try:
            self._to_peer(relay, action.data, action.peer)
        finally:
            relay.sock.setsockopt(level, option, off)

    def _to_peer(self, relay: _Relay, data: bytes, peer: Address) -> None:
        """Send one datagram to a peer, counting it (the UDP fast path inlines this)."""
        meter = relay.senders.meter
        if meter is not None:
            refused = meter.spend(len(data), time.monotonic())  # the data path's clock
            if refused is not None:
                self.counters.dropped[refused] += 1
                return
        try:
            relay.sock.sendto(data, peer)
        except OSError:
            self.counters.dropped[Drop.SEND_FAILED] += 1
            return
        relay.relayed.client_to_peer_datagrams += 1
        relay.relayed.client_to_peer_bytes += len(data)
        relay.senders.client_to_peer_datagrams += 1
        relay.senders.client_to_peer_bytes += len(data)

    def _send_to_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        if five_tuple.transport is ClientTransport.UDP:
            sock = self.udp_sockets.get(five_tuple.server)
            if sock is not None:
                try:
                    sock.sendto(data, five_tuple.client)
                except OSError:
                    self.counters.dropped[Drop.SEND_FAILED] += 1
            return
        connection = self.streams.get(five_tuple)
        if connection is not None:
            self._to_stream(connection, data)

    def _open_relay(self, action: OpenRelay) -> None:
        if action.tcp:  # RFC 6062 §5.1: a listening socket (`trelay.node.tcp_relay`)
            self.tcp_relays.open(action)
            return
        held: socket.socket | None = None
        try:
            if action.reserved:  # a redeemed reservation: its held socket, else bind it
                taken = self._reserved.pop((action.host, action.port), None)
                sock = taken or bind_relay_socket(action.host, action.port)
            else:
                sock, held = bind_relay(
                    action.host, action.port, even=action.even, reserve_next=action.reserve_next
                )  # fmt: skip
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:  # the core answers 508 (or tries a port more)
                self.exhaustion.refused(RELAY_SOCKET, exc, trio.current_time())
            self._execute(self.server.relay_failed(action.five_tuple, trio.current_time()))
            return
        self.exhaustion.succeeded()
        bound = sock.getsockname()
        relayed = (bound[0], bound[1])
        counters = self.counters.by_transport[action.five_tuple.transport]
        relay = _Relay(sock, self.data_plane, counters, RelaySenders(sock.sendto))
        relay.out = SegmentingSocket(sock, self.counters.gso)
        if action.five_tuple.transport is ClientTransport.UDP:
            relay.client_out = self.udp_outs.get(action.five_tuple.server)
        self._relays[relayed] = relay
        reserved: Address | None = None
        if held is not None:
            reserved = (relayed[0], held.getsockname()[1])
            self._reserved[reserved] = held
        twin = None if action.dual_host is None else self._open_twin(action, relay)
        second = None if twin is None else _address_of(twin.sock)
        now = trio.current_time()
        opened = self.server.relay_opened(
            action.five_tuple, relayed, now, runtime=relay.senders, reserved=reserved,
            second=second,
        )  # fmt: skip
        relay.allocation = self.server.by_relayed.get(relayed)
        if relay.allocation is not None:  # before the answer leaves: the client's next
            self._steer(relayed, relay.allocation.five_tuple)  # request must land here
        self._execute(opened)
        if relay.allocation is None:  # pragma: no cover - the core always creates it
            self._relays.pop(relayed, None)
            sock.close()
            return
        self.usage.opened(relay.allocation, relay.senders)
        relay.deliver = self._delivery(relay.allocation.five_tuple)
        # Each one's address as bound above: no getsockname per allocation (issue 13).
        for each, address in ((relay, relayed), (twin, second)):
            if each is not None and address is not None and self._relays.get(address) is each:
                each.allocation, each.deliver = relay.allocation, relay.deliver
                if each.deliver is not None:  # else its stream client is gone already
                    self._read(each, each.sock)

    def _open_twin(self, action: OpenRelay, relay: _Relay) -> _Relay | None:
        """A dual allocation's second relay socket, of the other family, on the first
        one's port (the core's from its range; else tried first, so that an EVEN-PORT
        allocation is even in both families, then any): registered beside `relay`,
        sharing its senders, whose `transmit` now picks the socket by the peer's family.
        None if it cannot be bound (the core answers ADDRESS-ERROR-CODE 508 for it)."""
        host = action.dual_host
        assert host is not None
        ports = (action.port,) if action.port else (relay.sock.getsockname()[1], 0)
        for port in ports:
            try:
                sock = bind_relay_socket(host, port)
                break
            except OSError as exc:
                if exc.errno in EXHAUSTION_ERRNOS:
                    self.exhaustion.refused(RELAY_SOCKET, exc, trio.current_time())
                    return None
        else:
            return None
        senders = relay.senders
        senders.transmit = _by_family(relay.sock, sock)
        twin = _Relay(sock, self.data_plane, relay.relayed, senders)
        twin.out = SegmentingSocket(sock, self.counters.gso)
        twin.client_out = relay.client_out
        self._relays[_address_of(sock)] = twin
        return twin

    # --- peer -> client ------------------------------------------------------------------

    def _read(self, relay: _Relay, sock: socket.socket, peer: Address | None = None) -> None:
        """Read `sock` (the relay socket, or a channel's connected to `peer`) through the
        data plane, to the allocation's client; again after a move (the reader is replaced)."""
        self.datagram_plane().add(sock, self._peer_reader(relay, sock, peer).batch)

    def _delivery(self, five_tuple: FiveTuple) -> Callable[[Buffer], object] | None:
        """How a frame reaches the client of `five_tuple`; None if it is gone."""
        if five_tuple.transport is ClientTransport.UDP:
            client_sock = self.udp_sockets[five_tuple.server]
            client = five_tuple.client

            def to_datagram_client(frame: Buffer) -> object:
                return client_sock.sendto(frame, client)

            return to_datagram_client
        connection = self.streams.get(five_tuple)
        if connection is None:
            return None

        def to_stream_client(frame: Buffer) -> object:
            # The outbox keeps what it is given: a copy, not a view of our buffer.
            if self._to_stream(connection, bytes(frame)):
                return True
            raise Stalled

        return to_stream_client

    def _peer_reader(self, relay: _Relay, sock: socket.socket, peer: Address | None) -> PeerReader:
        """A reader of `sock` (the relay socket, or a channel's connected to `peer`) to the
        allocation's client."""
        allocation = relay.allocation
        assert allocation is not None and relay.deliver is not None
        # GRO (a receive may hold a run of one peer's datagrams) only where the reader
        # splits it into GSO runs: towards a UDP client; off when a move makes it another.
        gro = relay.gro.get(sock.fileno())
        if gro is None:
            gro = relay.gro[sock.fileno()] = GroState(sock, relay.client_out is not None)
        else:
            gro.allow(relay.client_out is not None)
        return PeerReader(
            sock, allocation, relay.deliver, self.server.peer_datagram, self.counters,
            relay.relayed, self.peer_buffer, relay.client_out, gro, peer,
        )  # fmt: skip

    def take_moved_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        """A request another worker received for this one (`trelay.node.mobility_steering`:
        RFC 8016's Refresh with this worker's ticket, an Allocate with its
        RESERVATION-TOKEN): the core runs it as if it had arrived here, and the answer
        leaves from this worker's socket of the same listen address."""
        reply = self.handle_stun(data, five_tuple)
        if reply is not None:
            self._send_to_client(five_tuple, reply)

    def _steer(self, relayed: Address, five_tuple: FiveTuple) -> None:
        """With workers: capture the allocation's UDP client if the kernel hands its
        datagrams to another worker (a moved client, a redeemed reservation's)."""
        steering = self.steering
        udp = five_tuple.transport is ClientTransport.UDP
        if steering is not None and udp and steering.elsewhere(five_tuple.client):
            self._capture(relayed, five_tuple)

    def _capture(self, relayed: Address, five_tuple: FiveTuple) -> None:
        """Take a moved UDP client's datagrams from the worker the kernel would pick: a
        socket in its listen address's SO_REUSEPORT group, connected to the client (the
        kernel prefers it for that 5-tuple), read by the data plane like a listener."""
        server, client = five_tuple.server, five_tuple.client
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        # V6ONLY as the group's IPv6 listener has it.
        sock = self._connected_udp(
            family, server, client, socket.SO_REUSEPORT, v6only=family == socket.AF_INET6
        )
        if sock is None:
            return
        self._captured[relayed] = sock
        if self.steering is not None:  # always, as only `_steer` captures
            self.steering.counts.captured += 1
        table = self.server.client_table(ClientTransport.UDP, server)
        reader = ClientReader(sock, server, self.captured_stats, table, self.counters, self)
        self.datagram_plane().add(sock, reader.batch)

    def _release_capture(self, relayed: Address) -> None:
        sock = self._captured.pop(relayed, None)
        if sock is not None:
            self.data_plane.discard(sock)
            # Closed once this batch is over: its reader may be answering, from this
            # very socket, the Refresh that ended the allocation.
            trio.lowlevel.current_trio_token().run_sync_soon(sock.close)

    def _client_moved(self, action: AllocationMoved) -> None:
        """RFC 8016: the allocation's client is at a new 5-tuple; what its relay reads
        goes there from now on (each reader is rebuilt between two batches). With
        workers, a client the kernel hands to another worker is captured here."""
        self._release_capture(action.relayed)
        self._steer(action.relayed, action.five_tuple)
        log.info(
            "allocation moved",
            extra={
                "client": action.five_tuple.client,
                "previous": action.previous.client,
                "relayed": action.relayed,
                "transport": action.five_tuple.transport,
            },
        )
        allocation = self.server.by_relayed.get(action.relayed)
        second = None if allocation is None else allocation.second  # a dual one's twin
        for relayed in (action.relayed, second):
            relay = None if relayed is None else self._relays.get(relayed)
            if relay is None or relay.deliver is None:
                continue  # its task has not started yet: it starts with the new 5-tuple
            deliver = self._delivery(action.five_tuple)
            if deliver is not None:
                relay.deliver = deliver
                relay.client_out = None  # GSO runs go through the new listener, if UDP
                if action.five_tuple.transport is ClientTransport.UDP:
                    relay.client_out = self.udp_outs.get(action.five_tuple.server)
                self._read(relay, relay.sock)
                for sock in relay.connected:
                    self._read(relay, sock, _peer_of(sock))

    def connect_channel(self, allocation: Allocation, channel: int, peer: Address) -> None:
        """Give `channel` a socket on the relayed address connected to `peer`.

        Sending on it needs no address (CPython parses none, the kernel keeps the route),
        and the peer's datagrams now arrive on it: a reader like the relay socket's reads
        them. At most `MAX_CONNECTED_CHANNELS` per allocation (file descriptors are a
        budget); beyond that, and when the socket cannot be made, the channel keeps
        using the relay socket.
        """
        relayed = allocation.relayed_for(peer[0])  # its family's, of a dual allocation
        relay = self._relays.get(relayed)
        if relay is None or relay.deliver is None or relay.out is None:
            return
        senders = relay.senders
        per_channel, transmit = senders.per_channel, senders.transmit

        def unconnected(data: Buffer) -> int:
            return transmit(data, peer)

        # Until connected, or for good: through the relay socket, addressed.
        per_channel[channel] = Route(peer, unconnected, relay.out, peer, senders)
        if len(relay.connected) >= MAX_CONNECTED_CHANNELS:
            return
        sock = self._connected_udp(relay.sock.family, relayed, peer, socket.SO_REUSEADDR)
        if sock is None:
            return
        relay.connected.append(sock)
        out = SegmentingSocket(sock, self.counters.gso)
        per_channel[channel] = Route(peer, sock.send, out, None, senders)
        self._read(relay, sock, peer)

    def _connected_udp(
        self, family: int, local: Address, remote: Address, reuse: int, *, v6only: bool = False
    ) -> socket.socket | None:
        """A non-blocking UDP socket with SOL_SOCKET option `reuse` (SO_REUSEADDR beside
        a relay socket, SO_REUSEPORT to join a listener's group) bound to `local` and
        connected to `remote`, or None when that fails: an optimisation refused, the
        caller keeps what it had (a descriptor limit is counted as CHANNEL_SOCKET)."""
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:
                self.exhaustion.refused(CHANNEL_SOCKET, exc, trio.current_time())
            return None
        try:
            sock.setblocking(False)
            if v6only:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, reuse, 1)
            sock.bind(local)
            sock.connect(remote)
        except OSError:
            sock.close()
            return None
        return sock

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped because a socket's receive buffer was full: the
        UDP listeners' (since this node took them) and every relay socket's, live or
        closed. Read at scrape time (one getsockopt per socket), never per packet."""
        listeners = sum(
            kernel_drops(sock) - self._listener_drops_before.get(address, 0)
            for address, sock in self.udp_sockets.items()
        )
        relays = sum(relay.kernel_drops() for relay in self._relays.values())
        return self._closed_drops + listeners + relays

    # --- session admin (`trelay.node.sessions`) ------------------------------------------

    def sessions(self, identity: str | None = None) -> list[Session]:
        """Every live allocation (only `identity`'s when given), with what it relayed."""
        by_relayed = self.server.by_relayed
        return [
            Session(view, Traffic.of(by_relayed[view.relayed].runtime))
            for view in self.server.allocation_views(trio.current_time(), identity)
        ]

    def end_sessions(self, *, identity: str | None = None, relayed: Address | None = None) -> int:
        """End every allocation of `identity`, or the one at `relayed` (bound or reported
        address); return how many ended. Their relay sockets close at once; each client
        learns at its next request (437)."""
        if (identity is None) == (relayed is None):
            raise ValueError("give identity or relayed, not both")
        if identity is not None:
            actions = self.server.end_identity(identity)
        else:
            assert relayed is not None
            actions = self.server.end_allocation(relayed)
        ended = sum(isinstance(action, AllocationEnded) for action in actions)
        log.info(
            "operator ended %d allocation(s)",
            ended,
            extra={"identity": identity, "relayed": relayed},
        )
        self._execute(actions)
        return ended

    # --- timers and shutdown -------------------------------------------------------------

    async def run_timers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sleep until the core's next deadline, run its timers, repeat."""
        task_status.started()
        while True:
            deadline = self.server.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            self._execute(self.server.handle_timer(trio.current_time()))

    def _rearm_timer(self) -> None:
        """Wake the timer task early when a new deadline is sooner than the one it sleeps to."""
        scope = self._timer_scope
        deadline = self.server.next_deadline()
        if scope is not None and deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def drain(
        self,
        within: float,
        *,
        alternate: Address | None = None,
        progress: Callable[[int], object] | None = None,
        every: float = DRAIN_PROGRESS_SECONDS,
    ) -> DrainEnd:
        """Refuse new allocations, let the others run for up to `within` seconds (the
        drain timeout), then end what is left; return why it ended.

        New Allocates get 300 with `alternate` (when given) or 508 (the core decides,
        `TurnServer.start_draining`); everything else keeps working. `progress` is told
        the allocations left every `every` seconds while some are. `end_drain_now` ends
        it early (an operator's second signal).
        """
        self.server.start_draining(alternate=alternate)
        scope = self._drain_scope
        scope.deadline = min(scope.deadline, trio.current_time() + within)
        with scope:
            while self.server.allocation_count:
                if self._all_ended.is_set():  # set by an earlier moment at zero
                    self._all_ended = trio.Event()
                with trio.move_on_after(every):
                    await self._all_ended.wait()
                left = self.server.allocation_count
                if left and progress is not None:
                    progress(left)
        end = DrainEnd.ALL_ENDED
        if scope.cancelled_caught and self.server.allocation_count:
            end = DrainEnd.ENDED_NOW if self._ended_now else DrainEnd.TIMEOUT
        self._execute(self.server.shutdown())
        return end

    def end_drain_now(self) -> None:
        """Cut a running (or coming) drain short: its allocations end at once."""
        self._ended_now = True
        self._drain_scope.cancel()


def wall_clock() -> float:
    return time.time()


def _address_of(sock: socket.socket) -> Address:
    bound = sock.getsockname()
    return (bound[0], bound[1])


def _peer_of(sock: socket.socket) -> Address:
    """Where a connected socket sends, as the core and `recvfrom` write it."""
    peer = sock.getpeername()
    return (peer[0], peer[1])


def _by_family(first: socket.socket, second: socket.socket) -> Callable[[Buffer, Address], int]:
    """A dual allocation's `transmit`: from the socket of the peer's family."""
    v6, v4 = (first, second) if first.family == socket.AF_INET6 else (second, first)
    send_v6, send_v4 = v6.sendto, v4.sendto

    def transmit(data: Buffer, peer: Address) -> int:
        return send_v6(data, peer) if ":" in peer[0] else send_v4(data, peer)

    return transmit
