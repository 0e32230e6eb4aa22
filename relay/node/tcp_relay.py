"""RFC 6062 TCP relaying, the runtime's part: listening relay sockets, peer connections, splices.

Owns the sockets of TCP allocations; what to do with them is the core's decision
(`trelay.turn.tcp_relay`), reported back through `TurnServer`'s methods:

- A TCP allocation's relayed address is a listening TCP socket (`open`, §5.1), with
  SO_REUSEADDR and SO_REUSEPORT so that the connections the relay makes to peers
  (§5.2) can be bound to that same address. Its accept loop runs in the listener's own
  cancel scope (`close_listener` on `CloseRelay` stops it and frees the port at once)
  and asks the core about each peer (`peer_arrived`, §5.3): the core's `AcceptPeer`
  keeps the connection, anything else closes it.
- Connect (`ConnectPeer`, §5.2): a task binds a socket to the relayed address and
  connects; the core times the attempt out itself (`ClosePeerConnection` cancels the
  task), the task reports `peer_connected` or `peer_connect_failed`.
- A peer connection then waits unread until the core splices it: the kernel buffers
  what the peer sends and its window closes, which is §5.2/§5.3's "buffer, adjust the
  advertised window". On `SpliceConnections` the client data connection's task
  (`trelay.node.stream_listener`) finds a handover for its 5-tuple (`handover_for`) and,
  once the ConnectionBind success is written, gives its stream to `splice`; that
  stream first yields what the client sent right behind its ConnectionBind, so those
  bytes reach the peer first, in order.
- The splice: two pumps, each reads at most `SPLICE_CHUNK` bytes and `send_all`s them
  before it reads again, so a side that does not read stops the reading of the other
  (backpressure both ways, one chunk in flight per direction, no other buffer). Either
  side closing or failing ends both (§5.5) and the core is told
  (`peer_connection_closed`).
- With `--workers N` the data connection may be one end of an AF_UNIX socketpair that
  the worker which accepted the client's connection proxies (`trelay.node.bind_proxy`):
  it is served and spliced as the client's own, under the client's 5-tuple.
- Counts: bytes relayed both ways, in the data path's counters of the data
  connection's transport (`DataPathCounters.by_transport`, the metrics' `transport`
  label: tcp or tls) and the allocation's `RelaySenders` (the session admin and usage
  records); each chunk counts as one "datagram". Descriptors or socket memory running
  out while accepting or connecting peers is counted and logged by the node's
  `Exhaustion` (`PEER_CONNECTION`), a relay socket that cannot be made as for UDP.
- Bandwidth limits (`trelay.turn.bandwidth`): a TCP byte cannot be dropped, so a pump
  whose allocation has a meter waits, after each read, until the chunk fits its buckets
  before sending it (and reading the next): the sender's TCP window closes, the rate
  holds. The chunk then spends what it costs (its bytes), either way; a chunk (up to
  `SPLICE_CHUNK`) bigger than the burst waits for a full bucket and leaves it in debt.
"""

from __future__ import annotations

import errno
import functools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from trelay.node.data_path import DataPathCounters, RelaySenders, TransportCounters
from trelay.node.exhaustion import EXHAUSTION_ERRNOS, PEER_CONNECTION, RELAY_SOCKET, Exhaustion
from trelay.node.frontend import Handover
from trelay.node.usage import UsageRecorder
from trelay.turn.actions import (
    AcceptPeer,
    Action,
    ClosePeerConnection,
    ConnectPeer,
    OpenRelay,
    SpliceConnections,
)
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.server import TurnServer

# What one read of a splice takes, at most: also all a splice buffers per direction.
SPLICE_CHUNK = 65536
LISTEN_BACKLOG = 128
# Peers accepted per wake-up of a listener before other tasks run.
ACCEPT_BATCH = 16
# Out of descriptors: how long a listener waits before it accepts again.
EXHAUSTED_BACKOFF = 0.25
# accept() errors about one connection that broke in the backlog.
_IGNORED_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})

Execute = Callable[[list[Action]], None]


@dataclass(slots=True, eq=False)
class _Listener:
    sock: socket.socket
    scope: trio.CancelScope
    senders: RelaySenders
    metered: bool = False  # usage records opened (so `close_listener` ends them)


@dataclass(slots=True, eq=False)
class _Peer:
    """One peer connection: connecting (its task's scope), waiting, or spliced."""

    scope: trio.CancelScope
    sock: trio.socket.SocketType | None = None
    data_connection: FiveTuple | None = None  # once the core spliced it


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket at host:port (0: a free port); OSError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        _share_address(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _share_address(sock: socket.socket | trio.socket.SocketType) -> None:
    # Linux lets a connecting socket bind a listening socket's address only with
    # SO_REUSEPORT on both (SO_REUSEADDR alone conflicts with a socket in LISTEN).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


class TcpRelays:
    """The TCP allocations' sockets of one node (`TurnNode.tcp_relays`)."""

    def __init__(
        self,
        server: TurnServer,
        nursery: trio.Nursery,
        execute: Execute,
        counters: DataPathCounters,
        exhaustion: Exhaustion,
        usage: UsageRecorder,
    ) -> None:
        self.server = server
        self.nursery = nursery
        self.execute = execute
        self.counters = counters
        self.exhaustion = exhaustion
        self.usage = usage
        self.listeners: dict[Address, _Listener] = {}
        self.peers: dict[int, _Peer] = {}
        self._handovers: dict[FiveTuple, int] = {}  # data connection -> peer connection

    # --- listening relay sockets (§5.1, §5.3) ----------------------------------------

    def open(self, action: OpenRelay) -> None:
        """Bind a TCP allocation's listening socket, tell the core, accept peers."""
        now = trio.current_time()
        try:
            sock = bind_listener(action.host, action.port)
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:
                self.exhaustion.refused(RELAY_SOCKET, exc, now)
            self.execute(self.server.relay_failed(action.five_tuple, now))
            return
        self.exhaustion.succeeded()
        bound = sock.getsockname()
        relayed = (bound[0], bound[1])
        listener = _Listener(sock, trio.CancelScope(), RelaySenders(sock.sendto))
        self.listeners[relayed] = listener
        self.execute(
            self.server.relay_opened(action.five_tuple, relayed, now, runtime=listener.senders)
        )
        allocation = self.server.by_relayed.get(relayed)
        if allocation is None or self.listeners.get(relayed) is not listener:
            self.close_listener(relayed)  # the Allocate was given up meanwhile
            return
        self.usage.opened(allocation, listener.senders)
        listener.metered = True
        self.nursery.start_soon(self._accept_loop, relayed, listener)

    def close_listener(self, relayed: Address) -> RelaySenders | None:
        """The allocation at `relayed` ended: stop accepting, free the port now. Returns
        what it relayed (for its "allocation ended" line), None if it was not ours."""
        listener = self.listeners.pop(relayed, None)
        if listener is None:
            return None
        listener.scope.cancel()
        if listener.sock.fileno() != -1:
            trio.lowlevel.notify_closing(listener.sock)
            listener.sock.close()
        if listener.metered:
            self.usage.ended(relayed)
        return listener.senders

    async def _accept_loop(self, relayed: Address, listener: _Listener) -> None:
        sock = listener.sock
        with listener.scope:
            while sock.fileno() != -1:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return
                for _ in range(ACCEPT_BATCH):
                    try:
                        connection, address = sock.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in EXHAUSTION_ERRNOS:
                            self.exhaustion.refused(PEER_CONNECTION, exc, trio.current_time())
                            await trio.sleep(EXHAUSTED_BACKOFF)
                            break
                        if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                            continue
                        return  # the listener itself is gone
                    self.exhaustion.succeeded()
                    self._arrived(relayed, connection, (address[0], address[1]))
                await trio.lowlevel.checkpoint()

    def _arrived(self, relayed: Address, connection: socket.socket, peer: Address) -> None:
        """§5.3: keep the connection if the core accepts the peer, else close it."""
        actions = self.server.peer_arrived(relayed, peer, trio.current_time())
        accepted = next((a for a in actions if isinstance(a, AcceptPeer)), None)
        if accepted is None:
            connection.close()
            return
        connection.setblocking(False)
        sock = trio.socket.from_stdlib_socket(connection)
        self.peers[accepted.connection_id] = _Peer(trio.CancelScope(), sock)
        self.execute([action for action in actions if action is not accepted])

    # --- the core's actions ---------------------------------------------------------------

    def run(self, action: ConnectPeer | SpliceConnections | ClosePeerConnection) -> None:
        """Carry out one of the core's RFC 6062 actions."""
        if isinstance(action, ConnectPeer):
            peer = _Peer(trio.CancelScope())
            self.peers[action.connection_id] = peer
            self.nursery.start_soon(self._connect, action, peer)
        elif isinstance(action, SpliceConnections):
            waiting = self.peers.get(action.connection_id)
            if waiting is not None:
                waiting.data_connection = action.data_connection
                self._handovers[action.data_connection] = action.connection_id
        else:
            self.close_peer(action.connection_id)

    def close_denied(self) -> int:
        """After a new peer policy: close the connections to peers it denies (the core
        decides, `TurnServer.close_denied_peer_connections`); return how many."""
        actions = self.server.close_denied_peer_connections(trio.current_time())
        self.execute(actions)
        return sum(isinstance(action, ClosePeerConnection) for action in actions)

    def close_peer(self, connection_id: int) -> None:
        """Close a peer connection (connecting, waiting or spliced) and its splice."""
        peer = self.peers.pop(connection_id, None)
        if peer is None:
            return
        peer.scope.cancel()
        if peer.data_connection is not None:
            self._handovers.pop(peer.data_connection, None)
        if peer.sock is not None:
            peer.sock.close()

    async def _connect(self, action: ConnectPeer, peer: _Peer) -> None:
        """§5.2: connect from the relayed address; the core's timer bounds it."""
        connection_id = action.connection_id
        family = socket.AF_INET6 if ":" in action.peer[0] else socket.AF_INET
        try:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:
                self.exhaustion.refused(PEER_CONNECTION, exc, trio.current_time())
            self._connect_failed(connection_id)
            return
        with peer.scope:  # cancelled by ClosePeerConnection: the timeout, the allocation's end
            try:
                _share_address(sock)
                await sock.bind(action.relayed)
                await sock.connect(action.peer)
            except OSError:
                sock.close()
                self._connect_failed(connection_id)
                return
            if self.peers.get(connection_id) is not peer:
                sock.close()  # closed meanwhile
                return
            peer.sock = sock
            self.execute(self.server.peer_connected(connection_id, trio.current_time()))
            return
        sock.close()

    def _connect_failed(self, connection_id: int) -> None:
        if self.peers.pop(connection_id, None) is not None:
            self.execute(self.server.peer_connect_failed(connection_id, trio.current_time()))

    # --- the splice (§5.4, §5.5) ------------------------------------------------------

    def handover_for(self, data_connection: FiveTuple) -> Handover | None:
        """What the client connection `data_connection` runs once spliced, if it is."""
        if not self._handovers:
            return None  # the common case: one dictionary truth test per read
        connection_id = self._handovers.get(data_connection)
        return None if connection_id is None else functools.partial(self.splice, connection_id)

    async def splice(self, connection_id: int, client: trio.abc.Stream) -> None:
        """Relay raw bytes between `client` and the peer until either ends or the core
        closes the connection; then close the peer side and tell the core."""
        peer = self.peers.get(connection_id)
        core = self.server.tcp.connections.get(connection_id)
        if peer is None or peer.sock is None or core is None or core.data_connection is None:
            return
        self._handovers.pop(core.data_connection, None)
        senders = core.allocation.runtime
        assert isinstance(senders, RelaySenders)
        counters = self.counters.by_transport[core.data_connection.transport]
        peer_stream = trio.SocketStream(peer.sock)
        peer.scope = trio.CancelScope()  # the connecting task's scope is spent
        with peer.scope:
            async with trio.open_nursery() as nursery:
                done = nursery.cancel_scope
                nursery.start_soon(_pump, client, peer_stream, counters, senders, True, done)
                nursery.start_soon(_pump, peer_stream, client, counters, senders, False, done)
        if self.peers.get(connection_id) is peer:
            self.close_peer(connection_id)
            self.server.peer_connection_closed(connection_id)
        elif peer.sock is not None:
            peer.sock.close()


async def _pump(
    source: trio.abc.Stream,
    sink: trio.abc.Stream,
    counters: TransportCounters,
    senders: RelaySenders,
    to_peer: bool,
    done: trio.CancelScope,
) -> None:
    """Copy `source` to `sink` a chunk at a time, each sent whole before the next read;
    at the end of either (EOF, reset, closed), end the splice. With a bandwidth meter
    (read per chunk: a reload may set or take it), each chunk waits until it fits."""
    try:
        while True:
            data = await source.receive_some(SPLICE_CHUNK)
            if not data:
                return
            size = len(data)
            meter = senders.meter
            if meter is not None:  # throttle, not drop: the data path's clock
                wait = meter.delay(size, time.monotonic())
                if wait > 0:
                    await trio.sleep(wait)
                meter.charge(size, time.monotonic())
            await sink.send_all(data)
            if to_peer:
                counters.client_to_peer_datagrams += 1
                counters.client_to_peer_bytes += size
                senders.client_to_peer_datagrams += 1
                senders.client_to_peer_bytes += size
            else:
                counters.peer_to_client_datagrams += 1
                counters.peer_to_client_bytes += size
                senders.peer_to_client_datagrams += 1
                senders.peer_to_client_bytes += size
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    finally:
        done.cancel()
