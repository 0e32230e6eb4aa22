"""The TURN runtime: runs a `turn.server.TurnServer` on trio sockets.

Owns everything between the pure core and the kernel for TURN (RFC 8656):

- executing the core's actions: replies to clients (UDP sockets or stream
  connections), datagrams to peers, binding and closing relay sockets;
- one relay socket per allocation, read by a task in the allocation's own cancel scope,
  so ending an allocation closes its socket at once (DESIGN §4);
- the data path both ways, with no checkpoint, log line or action object per packet:
  ChannelData from a client is one dict lookup for the allocation, one for the channel,
  one `sendto`; a peer datagram is one lookup for the channel and one send;
- the timer task that sleeps until the core's next deadline;
- graceful drain on shutdown.

Clocks: `trio.current_time()` is the core's `now` (so tests can use MockClock), and
`time.time()` its wall clock (nonces and TURN REST expiry must agree across processes).
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from relay.udp_listener import BATCH_SIZE, ICMP_ERRNOS, MAX_DATAGRAM
from turn.actions import (
    Action,
    AllocationCreated,
    AllocationEnded,
    CloseRelay,
    OpenRelay,
    SendToClient,
    SendToPeer,
)
from turn.addressing import Address, ClientTransport, FiveTuple
from turn.allocation import Allocation
from turn.binding import Responder
from turn.server import TurnServer

log = logging.getLogger("trelay.turn")

_CHANNEL_HEADER = struct.Struct("!HH")
# Linux: (level, option, DF on, the default) per family. IPv4 has no IP_MTU_DISCOVER in
# Python's socket module; values from <linux/in.h>: IP_MTU_DISCOVER 10, IP_PMTUDISC_DO 2,
# IP_PMTUDISC_WANT 1 (the default: DF on datagrams that fit, local fragmentation above).
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO, _IP_PMTUDISC_WANT = 10, 2, 1
_DONT_FRAGMENT = {
    socket.AF_INET: (socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO, _IP_PMTUDISC_WANT),
    socket.AF_INET6: (socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1, 0),
}
DONT_FRAGMENT_SUPPORTED = sys.platform == "linux"
StreamSend = Callable[[bytes], None]


@dataclass(slots=True)
class DataPathCounters:
    """Plain integers bumped on the data path; published by the metrics layer."""

    client_to_peer_datagrams: int = 0
    client_to_peer_bytes: int = 0
    peer_to_client_datagrams: int = 0
    peer_to_client_bytes: int = 0
    dropped_no_allocation: int = 0
    dropped_no_channel: int = 0
    dropped_no_permission: int = 0
    dropped_malformed: int = 0
    dropped_send_failed: int = 0


@dataclass(slots=True)
class _Relay:
    sock: socket.socket
    scope: trio.CancelScope
    allocation: Allocation | None = None


@dataclass(slots=True)
class StreamConnection:
    """A TCP/TLS client connection as the node sees it (a `relay.frontend.StreamSession`)."""

    node: TurnNode
    five_tuple: FiveTuple
    outbox: trio.MemorySendChannel[bytes]
    dropped: int = 0

    def frame(self, channel: int | None, data: bytes) -> None:
        self.node.stream_frame(self, channel, data)

    def keeps_alive(self) -> bool:
        return self.five_tuple in self.node.server.allocations

    def close(self) -> None:
        self.node.stream_closed(self)


@dataclass
class TurnNode:
    server: TurnServer
    nursery: trio.Nursery
    counters: DataPathCounters = field(default_factory=DataPathCounters)
    udp_sockets: dict[Address, socket.socket] = field(default_factory=dict)
    streams: dict[FiveTuple, StreamConnection] = field(default_factory=dict)
    _relays: dict[Address, _Relay] = field(default_factory=dict)
    _timer_scope: trio.CancelScope | None = None
    _all_ended: trio.Event = field(default_factory=trio.Event)

    # --- clients over UDP ---------------------------------------------------------------

    def udp_listener(self, sock: socket.socket, server_address: Address) -> Responder:
        """The per-datagram handler for the UDP listener bound at `server_address`."""
        self.udp_sockets[server_address] = sock
        table = self.server.client_table(ClientTransport.UDP, server_address)
        counters = self.counters
        unpack = _CHANNEL_HEADER.unpack_from

        def on_datagram(data: bytes, source: Address) -> bytes | None:
            if 0x40 <= data[0] <= 0x7F:  # ChannelData (RFC 5766 range), the hot path
                allocation = table.get(source)
                if allocation is None:
                    counters.dropped_no_allocation += 1
                    return None
                if len(data) < 4:
                    counters.dropped_malformed += 1
                    return None
                channel, length = unpack(data)
                peer = allocation.channels.get(channel)
                if peer is None:
                    counters.dropped_no_channel += 1
                    return None
                if length > len(data) - 4:
                    counters.dropped_malformed += 1
                    return None
                relay = self._relays[allocation.relayed]
                try:
                    relay.sock.sendto(data[4 : 4 + length], peer)
                except OSError:
                    counters.dropped_send_failed += 1
                    return None
                counters.client_to_peer_datagrams += 1
                counters.client_to_peer_bytes += length
                return None
            five_tuple = FiveTuple(ClientTransport.UDP, source, server_address)
            return self._handle_stun(data, five_tuple)

        return on_datagram

    # --- clients over TCP/TLS -----------------------------------------------------------

    def stream_frame(self, connection: StreamConnection, channel: int | None, data: bytes) -> None:
        """One deframed frame from a stream client; replies go to its outbox."""
        five_tuple = connection.five_tuple
        if channel is None:
            reply = self._handle_stun(data, five_tuple)
            if reply is not None:
                self._to_stream(connection, reply)
            return
        allocation = self.server.allocations.get(five_tuple)
        peer = None if allocation is None else allocation.channels.get(channel)
        if allocation is None or peer is None:
            self.counters.dropped_no_channel += 1
            return
        self._to_peer(self._relays[allocation.relayed].sock, data, peer)

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
        self._execute(self.server.connection_closed(connection.five_tuple))

    def _to_stream(self, connection: StreamConnection, data: bytes) -> None:
        try:
            connection.outbox.send_nowait(data)
        except trio.WouldBlock:
            connection.dropped += 1  # the writer is stalled; its idle timeout will close it
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # --- the control path ---------------------------------------------------------------

    def _handle_stun(self, data: bytes, five_tuple: FiveTuple) -> bytes | None:
        """Run a STUN message through the core; the reply to its sender is returned."""
        actions = self.server.handle_message(data, five_tuple, trio.current_time())
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
        for action in actions:
            if isinstance(action, SendToPeer):
                self._send_to_peer(action)
            elif isinstance(action, SendToClient):
                self._send_to_client(action.five_tuple, action.data)
            elif isinstance(action, OpenRelay):
                self._open_relay(action)
            elif isinstance(action, CloseRelay):
                relay = self._relays.pop(action.relayed, None)
                if relay is not None:
                    relay.scope.cancel()
            elif isinstance(action, AllocationCreated):
                log.info(
                    "allocation created",
                    extra={"client": action.five_tuple.client, "relayed": action.relayed},
                )
            elif isinstance(action, AllocationEnded):
                if self.server.draining and not self.server.allocation_count:
                    self._all_ended.set()
                log.info(
                    "allocation ended %s",
                    action.reason.value,
                    extra={"client": action.five_tuple.client, "relayed": action.relayed},
                )

    def _send_to_peer(self, action: SendToPeer) -> None:
        relay = self._relays.get(action.relayed)
        if relay is None:
            return
        if not action.dont_fragment:
            self._to_peer(relay.sock, action.data, action.peer)
            return
        # Send indications only (rare): DF for this one datagram, then the default again.
        level, option, on, off = _DONT_FRAGMENT[relay.sock.family]
        relay.sock.setsockopt(level, option, on)
        try:
            self._to_peer(relay.sock, action.data, action.peer)
        finally:
            relay.sock.setsockopt(level, option, off)

    def _to_peer(self, sock: socket.socket, data: bytes, peer: Address) -> None:
        """Send one datagram to a peer, counting it (the UDP fast path inlines this)."""
        try:
            sock.sendto(data, peer)
        except OSError:
            self.counters.dropped_send_failed += 1
            return
        self.counters.client_to_peer_datagrams += 1
        self.counters.client_to_peer_bytes += len(data)

    def _send_to_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        if five_tuple.transport is ClientTransport.UDP:
            sock = self.udp_sockets.get(five_tuple.server)
            if sock is not None:
                try:
                    sock.sendto(data, five_tuple.client)
                except OSError:
                    self.counters.dropped_send_failed += 1
            return
        connection = self.streams.get(five_tuple)
        if connection is not None:
            self._to_stream(connection, data)

    def _open_relay(self, action: OpenRelay) -> None:
        family = socket.AF_INET6 if ":" in action.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((action.host, action.port))
        except OSError:
            sock.close()
            self._execute(self.server.relay_failed(action.five_tuple, trio.current_time()))
            return
        bound = sock.getsockname()
        relayed = (bound[0], bound[1])
        relay = _Relay(sock, trio.CancelScope())
        self._relays[relayed] = relay
        self._execute(self.server.relay_opened(action.five_tuple, relayed, trio.current_time()))
        relay.allocation = self.server.by_relayed.get(relayed)
        if relay.allocation is None:  # pragma: no cover - the core always creates it
            self._relays.pop(relayed)
            sock.close()
            return
        self.nursery.start_soon(self._relay_task, relay)

    # --- peer -> client ------------------------------------------------------------------

    async def _relay_task(self, relay: _Relay) -> None:
        """Read the relay socket until the allocation ends (its scope is cancelled)."""
        allocation = relay.allocation
        assert allocation is not None
        with relay.scope, relay.sock:
            five_tuple = allocation.five_tuple
            if five_tuple.transport is ClientTransport.UDP:
                client_sock = self.udp_sockets[five_tuple.server]
                client = five_tuple.client

                def deliver(frame: bytes) -> None:
                    client_sock.sendto(frame, client)

            else:
                connection = self.streams.get(five_tuple)
                if connection is None:
                    return

                def deliver(frame: bytes) -> None:
                    self._to_stream(connection, frame)

            while True:
                await trio.lowlevel.wait_readable(relay.sock)
                while self._drain_relay(relay.sock, allocation, deliver) == BATCH_SIZE:
                    await trio.lowlevel.checkpoint()

    def _drain_relay(
        self, sock: socket.socket, allocation: Allocation, deliver: Callable[[bytes], None]
    ) -> int:
        counters = self.counters
        peers = allocation.peers
        pack = _CHANNEL_HEADER.pack
        pad = allocation.five_tuple.transport.is_stream
        for count in range(BATCH_SIZE):
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno not in ICMP_ERRNOS:
                    raise
                continue  # an ICMP error about an earlier datagram to a peer (DESIGN §5)
            peer = address if len(address) == 2 else (address[0], address[1])
            channel = peers.get(peer)
            if channel is not None:
                frame = pack(channel, len(data)) + data
                if pad and len(data) % 4:
                    frame += bytes(4 - len(data) % 4)
            else:
                indication = self.server.peer_datagram(allocation, peer, data)
                if indication is None:
                    counters.dropped_no_permission += 1
                    continue
                frame = indication
            try:
                deliver(frame)
            except OSError:
                counters.dropped_send_failed += 1
                continue
            counters.peer_to_client_datagrams += 1
            counters.peer_to_client_bytes += len(data)
        return BATCH_SIZE

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

    async def drain(self, grace: float) -> None:
        """Refuse new allocations, wait up to `grace` seconds for the rest, then end them."""
        self.server.draining = True
        if self.server.allocation_count:
            with trio.move_on_after(grace):
                await self._all_ended.wait()
        self._execute(self.server.shutdown())


def wall_clock() -> float:
    return time.time()
