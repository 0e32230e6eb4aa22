"""The relay's data path: datagrams in batches, client -> peer and peer -> client.

Owns design §4's hot loops and the counters they keep:

- `ClientReader`: one UDP listener's batches. ChannelData is relayed inline: one
  lookup for the allocation, one for the channel, one `sendto` of a view of the receive
  buffer (no copy); everything else goes to the TURN node's control path.
- `PeerReader`: one relay socket's batches. A datagram is received 4 bytes into a buffer
  so that, for a peer with a channel, the ChannelData header is written in place and
  one view is sent; a peer without a channel becomes a Data indication via the core.
- `DataPathCounters` / `TransportCounters`: plain integers, added once per batch, read
  by `trelay.ops.metrics` at scrape time.

No trio checkpoint, log line or action object per packet; ICMP errors never end a loop.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trelay.node.datagram_batch import (
    BATCH_SIZE,
    ICMP_ERRNOS,
    MAX_DATAGRAM,
    UdpListenerStats,
    send_reply,
)
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation, Buffer

if TYPE_CHECKING:
    from trelay.node.turn_node import TurnNode

_CHANNEL_HEADER = struct.Struct("!HH")
_ZEROS = bytes(3)


@dataclass(slots=True)
class TransportCounters:
    """Relayed traffic of the allocations of one client transport, added per batch."""

    client_to_peer_datagrams: int = 0
    client_to_peer_bytes: int = 0
    peer_to_client_datagrams: int = 0
    peer_to_client_bytes: int = 0


def _by_transport() -> dict[ClientTransport, TransportCounters]:
    return {transport: TransportCounters() for transport in ClientTransport}


@dataclass(slots=True)
class DataPathCounters:
    """Plain integers bumped on the data path (per batch where it can); `trelay.ops.metrics`
    reads them at scrape time. Relayed traffic is kept per client transport
    (`by_transport`) and summed on reading; drops are not split."""

    by_transport: dict[ClientTransport, TransportCounters] = field(default_factory=_by_transport)
    dropped_no_allocation: int = 0
    dropped_no_channel: int = 0
    dropped_no_permission: int = 0
    dropped_malformed: int = 0
    dropped_send_failed: int = 0
    dropped_queue_full: int = 0  # a stream client's outbox was full (or already closed)

    @property
    def client_to_peer_datagrams(self) -> int:
        return sum(c.client_to_peer_datagrams for c in self.by_transport.values())

    @property
    def client_to_peer_bytes(self) -> int:
        return sum(c.client_to_peer_bytes for c in self.by_transport.values())

    @property
    def peer_to_client_datagrams(self) -> int:
        return sum(c.peer_to_client_datagrams for c in self.by_transport.values())

    @property
    def peer_to_client_bytes(self) -> int:
        return sum(c.peer_to_client_bytes for c in self.by_transport.values())


class ClientReader:
    """Client -> relay over one UDP listener: datagrams in batches.

    ChannelData is relayed inline (design §4): one lookup for the allocation, one for
    the channel, one send of a view of the receive buffer; the counters are added up
    once per batch. The send goes through the channel's connected socket once there is
    one (`TurnNode.connect_channel`: no address to parse, a cached route), else through
    the relay socket. Everything else is STUN for the core.
    """

    __slots__ = ("buffer", "node", "relayed", "server_address", "sock", "stats", "table", "view")

    def __init__(
        self, sock: socket.socket, server_address: Address, stats: UdpListenerStats, node: TurnNode
    ) -> None:
        self.sock = sock
        self.server_address = server_address
        self.stats = stats
        self.node = node
        self.table = node.server.client_table(ClientTransport.UDP, server_address)
        self.relayed = node.counters.by_transport[ClientTransport.UDP]
        self.buffer = bytearray(MAX_DATAGRAM)
        self.view = memoryview(self.buffer)

    def batch(self) -> int:  # noqa: PLR0915 - the hot path is inlined on purpose (design §4)
        counters, stats, table = self.node.counters, self.stats, self.table
        buffer, view = self.buffer, self.view
        receive_into = self.sock.recvfrom_into
        unpack_from = _CHANNEL_HEADER.unpack_from
        # IPv4 sources are (host, port) already; IPv6 ones carry flow info and scope too.
        is_pair = self.sock.family == socket.AF_INET
        count = errors = relayed = relayed_bytes = 0
        try:
            for count in range(BATCH_SIZE):  # `finally` reads `count`
                try:
                    size, address = receive_into(buffer)
                except BlockingIOError:
                    return count
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        raise
                    errors += 1
                    continue
                source = address if is_pair else (address[0], address[1])
                if size >= 4 and 0x40 <= buffer[0] <= 0x7F:  # ChannelData: the hot path
                    allocation = table.get(source)
                    if allocation is None:
                        counters.dropped_no_allocation += 1
                        continue
                    channel, length = unpack_from(buffer)
                    peer = allocation.channels.get(channel)
                    if peer is None:
                        counters.dropped_no_channel += 1
                        continue
                    if length > size - 4:
                        counters.dropped_malformed += 1
                        continue
                    sender = allocation.senders.get(channel)
                    try:
                        if sender is not None and sender[0] == peer:
                            sender[1](view[4 : 4 + length])  # connected: no address to parse
                        else:
                            allocation.transmit(view[4 : 4 + length], peer)  # type: ignore[misc]
                            if sender is None:
                                self.node.connect_channel(allocation, channel, peer)
                    except OSError:
                        counters.dropped_send_failed += 1
                        continue
                    relayed += 1
                    relayed_bytes += length
                    continue
                self._stun(bytes(view[:size]), source, address)
            count = BATCH_SIZE
            return count
        finally:
            stats.datagrams_received += count - errors
            stats.receive_errors += errors
            by_transport = self.relayed
            by_transport.client_to_peer_datagrams += relayed
            by_transport.client_to_peer_bytes += relayed_bytes

    def _stun(self, data: bytes, source: Address, address: Any) -> None:
        five_tuple = FiveTuple(ClientTransport.UDP, source, self.server_address)
        reply = self.node.handle_stun(data, five_tuple)
        if reply is not None:
            send_reply(self.sock, reply, address, self.stats)


class Stalled(Exception):
    """The stream client's outbox is full: the datagram is dropped, not delivered."""


class PeerBuffer:
    """The receive buffer of every `PeerReader` of one node: header, datagram, padding."""

    __slots__ = ("buffer", "view")

    def __init__(self) -> None:
        self.buffer = bytearray(4 + MAX_DATAGRAM + 3)
        self.view = memoryview(self.buffer)


class PeerReader:
    """Peer -> client for one allocation: datagrams from the relay socket, in batches.

    Each datagram is received at offset 4 of a buffer, so a peer with a channel costs
    one lookup, a 4-byte header written in place and one send of a view (no copy over
    UDP); a peer without a channel becomes a Data indication through the core (§10.3).

    The buffer is the node's `PeerBuffer`, shared by every allocation: a batch never
    awaits, and what leaves it is sent (UDP) or copied (streams) before the next
    datagram is read, so one 64 KiB buffer serves any number of allocations.
    """

    __slots__ = ("allocation", "buffer", "counters", "deliver", "node", "relayed", "sock", "view")

    def __init__(
        self,
        sock: socket.socket,
        allocation: Allocation,
        deliver: Callable[[Buffer], object],
        node: TurnNode,
        relayed: TransportCounters,
    ) -> None:
        self.sock = sock
        self.allocation = allocation
        self.deliver = deliver
        self.node = node
        self.counters = node.counters
        self.relayed = relayed
        self.buffer = node.peer_buffer.buffer
        self.view = node.peer_buffer.view

    def batch(self) -> int:
        counters = self.counters
        peers = self.allocation.peers
        buffer, view, deliver = self.buffer, self.view, self.deliver
        receive_into = self.sock.recvfrom_into
        payload = self.view[4 : 4 + MAX_DATAGRAM]
        pack_into = _CHANNEL_HEADER.pack_into
        pad = self.allocation.five_tuple.transport.is_stream
        is_pair = self.sock.family == socket.AF_INET
        delivered = delivered_bytes = 0
        try:
            for count in range(BATCH_SIZE):  # `finally` adds up what was delivered
                try:
                    size, address = receive_into(payload)
                except BlockingIOError:
                    return count
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        raise
                    continue  # an ICMP error about an earlier datagram to a peer (design §5)
                peer = address if is_pair else (address[0], address[1])
                channel = peers.get(peer)
                if channel is not None:
                    pack_into(buffer, 0, channel, size)
                    end = 4 + size
                    if pad and size & 3:
                        end += 4 - (size & 3)
                        buffer[4 + size : end] = _ZEROS[: end - 4 - size]
                    frame: Buffer = view[:end]
                else:
                    data = bytes(view[4 : 4 + size])
                    indication = self.node.server.peer_datagram(self.allocation, peer, data)
                    if indication is None:
                        counters.dropped_no_permission += 1
                        continue
                    frame = indication
                try:
                    deliver(frame)
                except Stalled:
                    counters.dropped_queue_full += 1
                    continue
                except OSError:
                    counters.dropped_send_failed += 1
                    continue
                delivered += 1
                delivered_bytes += size
            return BATCH_SIZE
        finally:
            self._count(delivered, delivered_bytes)

    def _count(self, delivered: int, delivered_bytes: int) -> None:
        """Once per batch: what reached the client, for its transport."""
        by_transport = self.relayed
        by_transport.peer_to_client_datagrams += delivered
        by_transport.peer_to_client_bytes += delivered_bytes
