"""The relay's data path: datagrams in batches, client -> peer and peer -> client.

Owns design §4's hot loops and the counters they keep:

- `ClientReader`: one UDP listener's batches. ChannelData is relayed inline: one
  lookup for the allocation, one for the channel, a view of the receive buffer (no
  copy) sent through the channel's `Route`; consecutive payloads of one route and size
  leave as one GSO run (`trelay.node.gso`). While clients send bursts of one flow the
  listener reads with UDP_GRO, and a coalesced receive is split into its datagrams, each
  checked and counted as if it had come alone. Everything else goes to the TURN node's
  control path.
- `PeerReader`: one relay socket's batches. A datagram is received 4 bytes past the
  previous frame so that, for a peer with a channel, the ChannelData header is written
  in place; a UDP client's frames of one size leave as one GSO run, a GRO receive as
  one run of header and payload buffers; a peer without a channel becomes a Data
  indication via the core.
- `RelaySenders`: how one allocation sends from its relayed address, the runtime's
  record the core keeps as `Allocation.runtime`, so the allocation found for a
  ChannelData packet leads to its socket with no second lookup;
- `DataPathCounters` / `TransportCounters`: plain integers, added once per batch, read
  by `trelay.ops.metrics` at scrape time. Drops are counted by the core's `Drop`, the
  one vocabulary of drop reasons. Per allocation, `RelaySenders` counts the same
  traffic again for the session admin (one more integer add per datagram client to
  peer, per batch peer to client).

Bandwidth limits (`trelay.turn.bandwidth`, issue 14 part 7): `RelaySenders.meter` is the
allocation's meter, None when no limit is set (the common case: one attribute test per
datagram client to peer, one per batch peer to client). With one, each datagram's
payload is spent from it before the datagram joins a run or is sent (so GSO runs and
GRO receives are limited datagram by datagram); a datagram refused is dropped and
counted by the level that refused it (`Drop.BANDWIDTH_*`). The clock is
`time.monotonic`, read once per batch (the node's other spenders use the same).

The readers reach the TURN node only through what they are given (`ControlPath`, the
core's tables and framing function), so this module does not import it.

No trio checkpoint, log line or action object per packet; ICMP errors never end a loop.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trelay.node.datagram_batch import (
    BATCH_SIZE,
    ICMP_ERRNOS,
    MAX_DATAGRAM,
    UdpListenerStats,
    send_reply,
)
from trelay.node.gso import (
    GRO_BUSY,
    GRO_CONTROL_SPACE,
    MAX_RUN_BYTES,
    MAX_SEGMENTS,
    GroState,
    GsoCounters,
    SegmentingSocket,
    gro_segment,
)
from trelay.stun.channel_data import FIRST_CHANNEL_BYTE, LAST_CHANNEL_BYTE
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation
from trelay.turn.bandwidth import Meter
from trelay.turn.stats import Drop, drop_counts

Buffer = bytes | bytearray | memoryview
# The core's framing of a datagram from a peer without a channel (`TurnServer.peer_datagram`).
PeerFraming = Callable[[Allocation, Address, bytes], bytes | None]

_CHANNEL_HEADER = struct.Struct("!HH")
_ZEROS = bytes(3)
# Receive buffers hold a run (datagrams waiting for one GSO send) and room for one more.
_RUN_SPACE = MAX_RUN_BYTES + 4 * MAX_SEGMENTS


class RelaySenders:
    """How the data path sends from one allocation's relayed address (`Allocation.runtime`),
    and what it relayed for that allocation.

    `transmit(data, peer)`: the relay socket's `sendto`. `per_channel`: channel number ->
    its `Route`, through a socket connected to the peer once there is one
    (`TurnNode.connect_channel`); the route's peer is checked against the channel's
    current peer before use, since a channel may expire and be bound again to another one.

    The four counters are this allocation's relayed datagrams and payload bytes each
    way, as `TransportCounters` counts them for every allocation of a transport (the
    session admin's view, `trelay.node.sessions`). Client to peer over UDP is added
    per datagram in the batch loop (the allocation is only known there), peer to client
    once per batch (a `PeerReader` serves one allocation).

    `meter`: the allocation's bandwidth meter, set by the node's `Bandwidth`; None while
    no limit applies.
    """

    __slots__ = (
        "client_to_peer_bytes", "client_to_peer_datagrams", "meter", "peer_to_client_bytes",
        "peer_to_client_datagrams", "per_channel", "transmit",
    )  # fmt: skip

    def __init__(self, transmit: Callable[[Buffer, Address], int]) -> None:
        self.transmit = transmit
        self.per_channel: dict[int, Route] = {}
        self.client_to_peer_datagrams = 0
        self.client_to_peer_bytes = 0
        self.peer_to_client_datagrams = 0
        self.peer_to_client_bytes = 0
        self.meter: Meter | None = None


class Route:
    """Where one channel's datagrams from the client leave: `send(data)` sends one (a
    connected socket's `send`, or the relay socket's `sendto` to `peer`); a run of them
    goes through `out` (that socket's `SegmentingSocket`) to `address` (None when the
    socket is connected). `senders`: the allocation's, which counts what left."""

    __slots__ = ("address", "out", "peer", "send", "senders")

    def __init__(
        self,
        peer: Address,
        send: Callable[[Buffer], int],
        out: SegmentingSocket,
        address: Address | None,
        senders: RelaySenders,
    ) -> None:
        self.peer = peer
        self.send = send
        self.out = out
        self.address = address
        self.senders = senders


class ControlPath(Protocol):
    """What a `ClientReader` hands to the TURN node (`trelay.node.turn_node.TurnNode`)."""

    def handle_stun(self, data: bytes, five_tuple: FiveTuple) -> bytes | None:
        """Run a STUN message through the core; the reply to its sender, if any."""
        ...

    def connect_channel(self, allocation: Allocation, channel: int, peer: Address) -> None:
        """The channel's first datagram went out: give it a sender of its own."""
        ...


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
    (`by_transport`) and summed on reading; drops are by the core's `Drop`, not split."""

    by_transport: dict[ClientTransport, TransportCounters] = field(default_factory=_by_transport)
    dropped: dict[Drop, int] = field(default_factory=drop_counts)
    gso: GsoCounters = field(default_factory=GsoCounters)

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
    the channel, a view of the receive buffer for the payload (no copy); the counters are
    added up per batch or per send. The send goes through the channel's `Route`: its
    connected socket once there is one (`TurnNode.connect_channel`: no address to parse,
    a cached route), else the relay socket. Consecutive datagrams of one route with one
    payload size form a run, sent with GSO when it ends (`trelay.node.gso`): each
    datagram is received behind the previous one in the buffer, so the run's payloads
    are views of it, gathered by the kernel. A run ends at a datagram for another route
    or of another size, before a STUN message (the control path may close a socket),
    when the buffer is full and at the end of the batch. Everything else is STUN for the
    core.

    With `gro` (the listener's `GroState`, issue 13 Deliver 2), the socket reads with
    UDP_GRO while clients send bursts of one flow: a receive may then hold a burst of one
    client's datagrams, each `segment` bytes (the last may be shorter), as a NIC with GRO
    delivers them (or, on loopback, a sender's GSO send). `_segments` takes each segment
    as if it had been received alone: checked on its own, its payload a view that joins
    the route's run; a STUN segment goes to the core. Busy, for the listener, is bursts
    of one flow: datagrams that joined a run, not datagrams from many clients, so GRO
    (and its dearer `recvmsg`) stays off at light load however many clients there are.
    """

    __slots__ = (
        "buffer", "control", "dropped", "gro", "is_pair", "relayed", "server_address", "sock",
        "stats", "table", "view",
    )  # fmt: skip

    def __init__(
        self,
        sock: socket.socket,
        server_address: Address,
        stats: UdpListenerStats,
        table: dict[Address, Allocation],
        counters: DataPathCounters,
        control: ControlPath,
        gro: GroState | None = None,
    ) -> None:
        """`table`: the core's client-address -> allocation map of this listener. `gro`:
        the socket's UDP_GRO, told what each batch saw (None: never coalesced)."""
        self.sock = sock
        # IPv4 sources are (host, port) already; IPv6 ones carry flow info and scope too.
        # Known once: `socket.family` builds an IntEnum at each read (0.65 µs a batch).
        self.is_pair = sock.family == socket.AF_INET
        self.gro = gro
        self.server_address = server_address
        self.stats = stats
        self.table = table
        self.control = control
        self.dropped = counters.dropped
        self.relayed = counters.by_transport[ClientTransport.UDP]
        self.buffer = bytearray(_RUN_SPACE + MAX_DATAGRAM)
        self.view = memoryview(self.buffer)

    def batch(self, limit: int = BATCH_SIZE) -> int:  # noqa: PLR0915 - inlined on purpose (§4)
        stats, table = self.stats, self.table
        buffer, view = self.buffer, self.view
        receive_into = self.sock.recvfrom_into
        unpack_from = _CHANNEL_HEADER.unpack_from
        first_channel, last_channel = FIRST_CHANNEL_BYTE, LAST_CHANNEL_BYTE  # locals: fast
        is_pair = self.is_pair
        now = time.monotonic()  # for bandwidth meters
        # While GRO may have coalesced what is queued: `recvmsg` for the segment size.
        gro = self.gro
        parse = gro is not None and gro.parse
        receive_message = self.sock.recvmsg_into
        ancillary: list[tuple[int, int, bytes]] = []
        # Datagrams beyond one per receive, and those that joined a run (`GroState`).
        coalesced = joined = 0
        count = errors = relayed = relayed_bytes = 0
        # Drops, as plain locals: added to the counters once per batch.
        no_allocation = no_channel = malformed = send_failed = 0
        # The run waiting for its send: payload views of one route, `run_size` bytes each,
        # received at offsets below `offset` (where the next datagram goes).
        run: list[Buffer] = []
        run_route: Route | None = None
        run_size = offset = 0
        try:
            for count in range(limit):  # `finally` reads `count`
                if offset > _RUN_SPACE:  # no room for a whole datagram behind the run
                    if run_route is not None:
                        self._flush(run_route, run, run_size)
                        run_route = None
                    offset = 0
                try:
                    if parse:
                        size, ancillary, _, address = receive_message(
                            [view[offset:]], GRO_CONTROL_SPACE
                        )
                    else:
                        size, address = receive_into(view[offset:] if offset else buffer)
                except BlockingIOError:
                    return count
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        raise
                    errors += 1
                    continue
                source = address if is_pair else (address[0], address[1])
                if ancillary:  # coalesced by GRO: a burst of this client's datagrams
                    segment = gro_segment(ancillary)
                    if 0 < segment < size:
                        coalesced += (size - 1) // segment  # its other datagrams
                        run, run_route, run_size, offset, took = self._segments(
                            offset, size, segment, source, address, now, run, run_route,
                            run_size,
                        )  # fmt: skip
                        joined += took
                        continue
                if size >= 4 and first_channel <= buffer[offset] <= last_channel:  # ChannelData
                    allocation = table.get(source)
                    if allocation is None:
                        no_allocation += 1
                        continue
                    channel, length = unpack_from(buffer, offset)
                    peer = allocation.channels.get(channel)
                    if peer is None:
                        no_channel += 1
                        continue
                    if length > size - 4:
                        malformed += 1
                        continue
                    # Handed to the core with the relay socket (`TurnServer.relay_opened`);
                    # an annotation, not a cast: no call per datagram.
                    senders: RelaySenders = allocation.runtime  # type: ignore[assignment]
                    meter = senders.meter
                    if meter is not None:  # a bandwidth limit: spent before it may leave
                        refused = meter.spend(length, now)
                        if refused is not None:
                            self.dropped[refused] += 1
                            continue
                    route = senders.per_channel.get(channel)
                    payload = view[offset + 4 : offset + 4 + length]
                    if route is not None and route.peer == peer:
                        if (
                            route is run_route
                            and length == run_size
                            and length
                            and len(run) < MAX_SEGMENTS
                            and (len(run) + 1) * length <= MAX_RUN_BYTES
                        ):
                            run.append(payload)
                            joined += 1
                        else:  # a run of its own; the previous one leaves first
                            if run_route is not None:
                                self._flush(run_route, run, run_size)
                            run, run_route, run_size = [payload], route, length
                        offset += size  # kept until the run is sent
                        continue
                    # The channel's first datagram, or its peer changed: alone, through
                    # the relay socket; then the channel gets a route of its own.
                    try:
                        senders.transmit(payload, peer)
                    except OSError:
                        send_failed += 1
                        continue
                    if route is None:
                        self.control.connect_channel(allocation, channel, peer)
                    relayed += 1
                    relayed_bytes += length
                    senders.client_to_peer_datagrams += 1
                    senders.client_to_peer_bytes += length
                    continue
                if run_route is not None:  # before the core, which may close its socket
                    self._flush(run_route, run, run_size)
                    run_route = None
                self._stun(bytes(view[offset : offset + size]), source, address)
            count = limit
            return count
        finally:
            if run_route is not None:
                self._flush(run_route, run, run_size)
            stats.datagrams_received += count - errors + coalesced
            stats.receive_errors += errors
            # Off and no burst: nothing for GRO to learn (the light-load path stays short).
            if gro is not None and (parse or joined >= GRO_BUSY):
                gro.after_batch(joined, coalesced, count < limit)
            by_transport = self.relayed
            by_transport.client_to_peer_datagrams += relayed
            by_transport.client_to_peer_bytes += relayed_bytes
            if no_allocation or no_channel or malformed or send_failed:
                dropped = self.dropped
                dropped[Drop.NO_ALLOCATION] += no_allocation
                dropped[Drop.NO_CHANNEL] += no_channel
                dropped[Drop.MALFORMED] += malformed
                dropped[Drop.SEND_FAILED] += send_failed

    def _segments(  # noqa: PLR0915 - as inlined as `batch`, whose datagrams these are
        self, offset: int, size: int, segment: int, source: Address, address: Any, now: float,
        run: list[Buffer], run_route: Route | None, run_size: int,
    ) -> tuple[list[Buffer], Route | None, int, int, int]:  # fmt: skip
        """A GRO receive at view[offset:offset + size] from `source`: datagrams of
        `segment` bytes (the last may be shorter), each taken as `batch` takes one
        received alone (the same checks, drops and counts; its payload a view that joins
        the run of its route, or starts one; STUN to the core after the run leaves).
        Given the batch's open run, returns it as it now is, the offset the next receive
        goes to, and how many datagrams joined a run. The common burst goes through
        `_uniform` first; what it leaves (a shorter last segment, any other burst) goes
        datagram by datagram here."""
        buffer, view, table, dropped = self.buffer, self.view, self.table, self.dropped
        unpack_from = _CHANNEL_HEADER.unpack_from
        stop = offset + size
        first, joined = offset, 0  # where the datagram-by-datagram loop starts
        if size >= 2 * segment and FIRST_CHANNEL_BYTE <= buffer[offset] <= LAST_CHANNEL_BYTE:
            run, run_route, run_size, first, joined = self._uniform(
                offset, size, segment, source, run, run_route, run_size
            )
        for start in range(first, stop, segment):
            length_in = min(segment, stop - start)  # this datagram's size
            if length_in >= 4 and FIRST_CHANNEL_BYTE <= buffer[start] <= LAST_CHANNEL_BYTE:
                allocation = table.get(source)  # again: a STUN segment may have ended it
                if allocation is None:
                    dropped[Drop.NO_ALLOCATION] += 1
                    continue
                channel, length = unpack_from(buffer, start)
                peer = allocation.channels.get(channel)
                if peer is None:
                    dropped[Drop.NO_CHANNEL] += 1
                    continue
                if length > length_in - 4:
                    dropped[Drop.MALFORMED] += 1
                    continue
                senders: RelaySenders = allocation.runtime  # type: ignore[assignment]
                meter = senders.meter
                if meter is not None:
                    refused = meter.spend(length, now)
                    if refused is not None:
                        dropped[refused] += 1
                        continue
                route = senders.per_channel.get(channel)
                payload = view[start + 4 : start + 4 + length]
                if route is not None and route.peer == peer:
                    if (
                        route is run_route
                        and length == run_size
                        and length
                        and len(run) < MAX_SEGMENTS
                        and (len(run) + 1) * length <= MAX_RUN_BYTES
                    ):
                        run.append(payload)
                        joined += 1
                    else:
                        if run_route is not None:
                            self._flush(run_route, run, run_size)
                        run, run_route, run_size = [payload], route, length
                    continue
                try:  # the channel's first datagram, or its peer changed (as in `batch`)
                    senders.transmit(payload, peer)
                except OSError:
                    dropped[Drop.SEND_FAILED] += 1
                    continue
                if route is None:
                    self.control.connect_channel(allocation, channel, peer)
                self._count(senders, 1, length)
                continue
            if run_route is not None:  # before the core, which may close its socket
                self._flush(run_route, run, run_size)
                run_route = None
            self._stun(bytes(view[start : start + length_in]), source, address)
        # An open run may hold views of this receive: the next one goes behind it.
        return run, run_route, run_size, stop if run_route is not None else offset, joined

    def _uniform(
        self, offset: int, size: int, segment: int, source: Address, run: list[Buffer],
        run_route: Route | None, run_size: int,
    ) -> tuple[list[Buffer], Route | None, int, int, int]:  # fmt: skip
        """The common burst of `_segments`, in C-speed steps: every whole segment
        ChannelData on one channel with one payload length, to a route already connected,
        without a bandwidth meter. The 4 header bytes of all segments are compared at
        once (a strided slice each), so every segment is still checked, and what holds
        for the first holds for each; the payload views join runs a slice at a time.
        Returns the run as it now is, where the datagram-by-datagram loop goes on (past
        the whole segments if they were taken, else `offset`), and how many joined a run.
        """
        buffer = self.buffer
        whole = size // segment
        end = offset + whole * segment
        for byte in range(4):
            strided = buffer[offset + byte : end : segment]
            if strided.count(strided[0]) != whole:
                return run, run_route, run_size, offset, 0
        allocation = self.table.get(source)
        if allocation is None:
            return run, run_route, run_size, offset, 0
        channel, length = _CHANNEL_HEADER.unpack_from(buffer, offset)
        peer = allocation.channels.get(channel)
        senders: RelaySenders = allocation.runtime  # type: ignore[assignment]
        route = senders.per_channel.get(channel)
        if (
            peer is None
            or route is None
            or route.peer != peer
            or senders.meter is not None
            or not 0 < length <= segment - 4
        ):
            return run, run_route, run_size, offset, 0
        view = self.view
        payloads: list[Buffer] = [view[at : at + length] for at in range(offset + 4, end, segment)]
        per_run = min(MAX_SEGMENTS, MAX_RUN_BYTES // length)
        taken = joined = 0
        if route is run_route and length == run_size and len(run) < per_run:
            taken = min(per_run - len(run), whole)  # the open run takes what it can
            run.extend(payloads[:taken])
            joined = taken
        for at in range(taken, whole, per_run):
            if run_route is not None:
                self._flush(run_route, run, run_size)
            run, run_route, run_size = payloads[at : at + per_run], route, length
            joined += len(run) - 1
        return run, run_route, run_size, end, joined

    def _count(self, senders: RelaySenders, count: int, payload_bytes: int) -> None:
        """`count` datagrams of `payload_bytes` in all left for the peer: counted."""
        by_transport = self.relayed
        by_transport.client_to_peer_datagrams += count
        by_transport.client_to_peer_bytes += payload_bytes
        senders.client_to_peer_datagrams += count
        senders.client_to_peer_bytes += payload_bytes

    def _flush(self, route: Route, run: list[Buffer], size: int) -> None:
        """Send a run (one datagram: a plain send; more: GSO) and count what left."""
        count = len(run)
        if count == 1:
            try:
                route.send(run[0])
            except OSError:
                self.dropped[Drop.SEND_FAILED] += 1
                return
        else:
            failed = route.out.send_run(run, size, count, route.address)
            if failed:
                self.dropped[Drop.SEND_FAILED] += failed
                count -= failed
        # Inline, not `_count`: at light load a run is one datagram, and this is its path.
        by_transport, senders = self.relayed, route.senders
        by_transport.client_to_peer_datagrams += count
        by_transport.client_to_peer_bytes += count * size
        senders.client_to_peer_datagrams += count
        senders.client_to_peer_bytes += count * size

    def _stun(self, data: bytes, source: Address, address: Any) -> None:
        five_tuple = FiveTuple(ClientTransport.UDP, source, self.server_address)
        reply = self.control.handle_stun(data, five_tuple)
        if reply is not None:
            send_reply(self.sock, reply, address, self.stats)


class Stalled(Exception):
    """The stream client's outbox is full: the datagram is dropped, not delivered."""


class PeerBuffer:
    """The receive buffer of every `PeerReader` of one node: a run of ChannelData frames
    waiting for one GSO send, then room for one more (header, datagram, padding)."""

    __slots__ = ("buffer", "view")

    def __init__(self) -> None:
        self.buffer = bytearray(_RUN_SPACE + 4 + MAX_DATAGRAM + 3)
        self.view = memoryview(self.buffer)


class PeerReader:
    """Peer -> client for one allocation: datagrams from the relay socket, in batches.

    Each datagram is received 4 bytes past the end of the previous frame, so a peer with
    a channel costs one lookup and a 4-byte header written in place (no copy over UDP);
    a peer without a channel becomes a Data indication through the core (§10.3).

    To a UDP client the frames of a batch lie back to back in the buffer: consecutive
    frames of one size are a run, sent as one view with GSO through the listener's
    `SegmentingSocket` (`trelay.node.gso`) when a frame of another size, a Data
    indication (which keeps its place in the order), a full buffer or the end of the
    batch ends it. To any other client each frame is handed to `deliver`, which copies
    it (a TCP/TLS connection's outbox, padded to 4 bytes first; a DTLS record).

    The buffer is the node's `PeerBuffer`, shared by every allocation: a batch never
    awaits, and what leaves it is sent (UDP) or copied (streams) before the batch ends,
    so one buffer serves any number of allocations.
    """

    __slots__ = (
        "allocation", "buffer", "client", "coalesced", "deliver", "dropped", "framing", "gro",
        "is_pair", "out", "peer", "received", "relayed", "sock", "view",
    )  # fmt: skip

    def __init__(
        self,
        sock: socket.socket,
        allocation: Allocation,
        deliver: Callable[[Buffer], object],
        framing: PeerFraming,
        counters: DataPathCounters,
        relayed: TransportCounters,
        peer_buffer: PeerBuffer,
        out: SegmentingSocket | None = None,
        gro: GroState | None = None,
        peer: Address | None = None,
    ) -> None:
        """`out`: the UDP listener's socket to the client (runs go through it; `deliver`
        is then its `sendto` to the client); None for any other client. `gro`: the
        socket's UDP_GRO (`GroState`, kept across the readers a move rebuilds), told
        what each batch saw; while it says `parse`, a receive may hold a run of one
        peer's datagrams, with their size in the ancillary data. `peer`: the peer `sock`
        is connected to (a channel's socket), whose datagrams are then received without
        their source: no address string and tuple to build per datagram (-0.45 µs)."""
        self.sock = sock
        # IPv4 sources are (host, port) already; IPv6 ones carry flow info and scope too.
        # Known once: `socket.family` builds an IntEnum at each read (0.65 µs a batch).
        self.is_pair = sock.family == socket.AF_INET
        self.allocation = allocation
        self.deliver = deliver
        self.framing = framing
        self.dropped = counters.dropped
        self.relayed = relayed
        self.buffer = peer_buffer.buffer
        self.view = peer_buffer.view
        self.out = out
        self.gro = gro
        self.peer = peer
        # What the last batch read: datagrams (a coalesced receive as its parts), and how
        # many of them came coalesced beyond one per receive (for `GroState`).
        self.received = self.coalesced = 0
        self.client = allocation.five_tuple.client

    def batch(self, limit: int = BATCH_SIZE) -> int:
        count = self._framed_batch(limit) if self.out is None else self._datagram_batch(limit)
        if self.gro is not None:
            self.gro.after_batch(self.received, self.coalesced, count < limit)
        return count

    def _datagram_batch(self, limit: int) -> int:  # noqa: PLR0915 - the hot path is inlined (design §4)
        peers = self.allocation.peers
        buffer, view = self.buffer, self.view
        receive_into, receive_message = self.sock.recvfrom_into, self.sock.recvmsg_into
        receive, connected = self.sock.recv_into, self.peer
        parse = self.gro is not None and self.gro.parse
        ancillary: list[tuple[int, int, bytes]] = []
        first = view[4 : 4 + MAX_DATAGRAM]  # where a batch's first datagram goes
        pack_into = _CHANNEL_HEADER.pack_into
        is_pair = self.is_pair
        senders: RelaySenders = self.allocation.runtime  # type: ignore[assignment]
        meter = senders.meter  # None: no bandwidth limit (checked once per datagram below)
        now = 0.0 if meter is None else time.monotonic()
        delivered = delivered_bytes = no_permission = send_failed = received = coalesced = 0
        # The run: frames of `frame` bytes at view[start:end]; the next datagram goes at
        # end + 4, behind room for its header.
        start = end = frame = bound = 0
        try:
            for count in range(limit):  # `finally` adds up what was delivered
                if end > _RUN_SPACE:  # no room for a whole datagram behind the run
                    if end != start:
                        failed = self._flush(start, end, frame)
                        send_failed += failed
                        delivered -= failed
                        delivered_bytes -= failed * (frame - 4)
                    start = end = 0
                target = view[end + 4 : end + 4 + MAX_DATAGRAM] if end else first
                try:
                    if parse:
                        size, ancillary, _, address = receive_message([target], GRO_CONTROL_SPACE)
                    elif connected is not None:
                        size, address = receive(target), connected
                    else:
                        size, address = receive_into(target)
                except BlockingIOError:
                    return count
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        raise
                    continue  # an ICMP error about an earlier datagram to a peer (design §5)
                received += 1
                peer = address if is_pair else (address[0], address[1])
                channel = peers.get(peer)
                if ancillary:  # coalesced by GRO: a run of this peer's datagrams
                    segment = gro_segment(ancillary)
                    if 0 < segment < size:
                        coalesced += (size - 1) // segment  # its other datagrams
                        if end != start:  # what came before it leaves before it
                            failed = self._flush(start, end, frame)
                            send_failed += failed
                            delivered -= failed
                            delivered_bytes -= failed * (frame - 4)
                        sent, sent_bytes, refused, failed = self._coalesced(
                            channel, peer, end + 4, size, segment, meter, now
                        )
                        delivered += sent
                        delivered_bytes += sent_bytes
                        no_permission += refused
                        send_failed += failed
                        start = end = 0
                        continue
                if channel is not None:
                    if meter is not None:  # a bandwidth limit: spent before the run takes it
                        over = meter.spend(size, now)
                        if over is not None:
                            self.dropped[over] += 1
                            continue
                    pack_into(buffer, end, channel, size)
                    if end != start and (size + 4 != frame or end - start + frame > bound):
                        failed = self._flush(start, end, frame)  # another size: a new run
                        send_failed += failed
                        delivered -= failed
                        delivered_bytes -= failed * (frame - 4)
                        start = end
                    if end == start:
                        frame = size + 4
                        bound = min(MAX_RUN_BYTES, frame * MAX_SEGMENTS) if size else frame
                    end += frame
                    delivered += 1
                    delivered_bytes += size
                    continue
                data = bytes(view[end + 4 : end + 4 + size])
                if end != start:  # what came before it leaves before it
                    failed = self._flush(start, end, frame)
                    send_failed += failed
                    delivered -= failed
                    delivered_bytes -= failed * (frame - 4)
                    start = end = 0
                indication = self.framing(self.allocation, peer, data)
                if indication is None:
                    no_permission += 1
                    continue
                if meter is not None:
                    over = meter.spend(size, now)
                    if over is not None:
                        self.dropped[over] += 1
                        continue
                try:
                    self.deliver(indication)
                except OSError:
                    send_failed += 1
                    continue
                delivered += 1
                delivered_bytes += size
            return limit
        finally:
            if end != start:
                failed = self._flush(start, end, frame)
                send_failed += failed
                delivered -= failed
                delivered_bytes -= failed * (frame - 4)
            self.received, self.coalesced = received + coalesced, coalesced
            self._count(delivered, delivered_bytes, no_permission, 0, send_failed)

    def _coalesced(
        self, channel: int | None, peer: Address, offset: int, size: int, segment: int,
        meter: Meter | None, now: float,
    ) -> tuple[int, int, int, int]:  # fmt: skip
        """A GRO receive at view[offset:offset + size]: datagrams of `segment` bytes (the
        last may be shorter) from `peer`, to the client. With a channel: ChannelData in
        GSO runs, each header a buffer of its own between the payloads (gathered by the
        kernel, no payload copied); without: a Data indication each, through the core.
        With a `meter`, each datagram spends from it first (one refused is left out of
        its run and counted here). Returns (delivered, their payload bytes, refused by
        the core, failed)."""
        view, out = self.view, self.out
        assert out is not None
        stop = offset + size
        if channel is None:  # as to a framed client (a UDP client's send never stalls)
            counts = self._framed_coalesced(None, peer, offset, size, segment, False, meter, now)
            delivered, delivered_bytes, refused, _, failed = counts
            return delivered, delivered_bytes, refused, failed
        header = _CHANNEL_HEADER.pack(channel, segment)
        per_run = max(1, min(MAX_SEGMENTS, MAX_RUN_BYTES // (segment + 4)))
        step = per_run * segment
        failed = over_count = over_bytes = 0
        for run_start in range(offset, stop, step):
            run_stop = min(run_start + step, stop)
            buffers: list[Buffer] = []
            if meter is None:  # the common case, in slices: header, payload, header, ...
                whole_end = run_start + (run_stop - run_start) // segment * segment
                pieces = [view[at : at + segment] for at in range(run_start, whole_end, segment)]
                if whole_end < run_stop:  # the burst's shorter last datagram
                    pieces.append(view[whole_end:run_stop])
                buffers = [header] * (2 * len(pieces))
                buffers[1::2] = pieces
                if whole_end < run_stop:
                    buffers[-2] = _CHANNEL_HEADER.pack(channel, run_stop - whole_end)
                failed += out.send_run(buffers, segment + 4, len(pieces), self.client)
                continue
            for start in range(run_start, run_stop, segment):
                piece = view[start : min(start + segment, run_stop)]
                if meter is not None:  # left out of the run: the others keep their size
                    over = meter.spend(len(piece), now)
                    if over is not None:
                        self.dropped[over] += 1
                        over_count += 1
                        over_bytes += len(piece)
                        continue
                buffers.append(
                    header if len(piece) == segment else _CHANNEL_HEADER.pack(channel, len(piece))
                )
                buffers.append(piece)
            if buffers:
                failed += out.send_run(buffers, segment + 4, len(buffers) // 2, self.client)
        count = -(-size // segment) - over_count
        # A failed datagram is counted as a whole segment (only the last may be shorter).
        return count - failed, max(0, size - over_bytes - failed * segment), 0, failed

    def _flush(self, start: int, end: int, frame: int) -> int:
        """Send the run of frames at view[start:end] to the client; how many failed."""
        if end - start == frame:
            try:
                self.deliver(self.view[start:end])
            except OSError:
                return 1
            return 0
        assert self.out is not None
        return self.out.send_run([self.view[start:end]], frame, (end - start) // frame, self.client)

    def _framed_batch(self, limit: int) -> int:  # noqa: PLR0915 - the hot path is inlined (design §4)
        peers = self.allocation.peers
        buffer, view, deliver = self.buffer, self.view, self.deliver
        receive_into, receive_message = self.sock.recvfrom_into, self.sock.recvmsg_into
        receive, connected = self.sock.recv_into, self.peer
        # GRO was on for a UDP client that moved to this one: what is queued from then
        # may still be coalesced, until a batch drains it (`GroState`).
        parse = self.gro is not None and self.gro.parse
        payload = self.view[4 : 4 + MAX_DATAGRAM]
        pack_into = _CHANNEL_HEADER.pack_into
        pad = self.allocation.five_tuple.transport.is_stream
        is_pair = self.is_pair
        senders: RelaySenders = self.allocation.runtime  # type: ignore[assignment]
        meter = senders.meter  # None: no bandwidth limit
        now = 0.0 if meter is None else time.monotonic()
        delivered = delivered_bytes = no_permission = queue_full = send_failed = 0
        try:
            for count in range(limit):  # `finally` adds up what was delivered
                try:
                    if parse:
                        size, ancillary, _, address = receive_message([payload], GRO_CONTROL_SPACE)
                        segment = gro_segment(ancillary)
                    elif connected is not None:
                        size, address, segment = receive(payload), connected, 0
                    else:
                        size, address = receive_into(payload)
                        segment = 0
                except BlockingIOError:
                    return count
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        raise
                    continue  # an ICMP error about an earlier datagram to a peer (design §5)
                peer = address if is_pair else (address[0], address[1])
                channel = peers.get(peer)
                if 0 < segment < size:  # rare: each datagram framed from a copy
                    counts = self._framed_coalesced(
                        channel, peer, 4, size, segment, pad, meter, now
                    )
                    delivered += counts[0]
                    delivered_bytes += counts[1]
                    no_permission += counts[2]
                    queue_full += counts[3]
                    send_failed += counts[4]
                    continue
                if channel is not None:
                    if meter is not None:
                        over = meter.spend(size, now)
                        if over is not None:
                            self.dropped[over] += 1
                            continue
                    pack_into(buffer, 0, channel, size)
                    end = 4 + size
                    if pad and size & 3:  # RFC 8656 §12.5: padded to 4 bytes over TCP/TLS
                        end += 4 - (size & 3)
                        buffer[4 + size : end] = _ZEROS[: end - 4 - size]
                    frame: Buffer = view[:end]
                else:
                    data = bytes(view[4 : 4 + size])
                    indication = self.framing(self.allocation, peer, data)
                    if indication is None:
                        no_permission += 1
                        continue
                    if meter is not None:
                        over = meter.spend(size, now)
                        if over is not None:
                            self.dropped[over] += 1
                            continue
                    frame = indication
                try:
                    deliver(frame)
                except Stalled:
                    queue_full += 1
                    continue
                except OSError:
                    send_failed += 1
                    continue
                delivered += 1
                delivered_bytes += size
            return limit
        finally:
            self._count(delivered, delivered_bytes, no_permission, queue_full, send_failed)

    def _framed_coalesced(
        self, channel: int | None, peer: Address, offset: int, size: int, segment: int,
        pad: bool, meter: Meter | None, now: float,
    ) -> tuple[int, int, int, int, int]:  # fmt: skip
        """A coalesced receive (at view[offset:offset + size]) to a framed client, or
        from a peer without a channel to any client, each datagram a frame of its own
        (copied), each spending from `meter` if there is one;
        (delivered, bytes, no_permission, queue_full, failed)."""
        delivered = delivered_bytes = no_permission = queue_full = failed = 0
        stop = offset + size
        for piece in range(offset, stop, segment):
            data = bytes(self.view[piece : min(piece + segment, stop)])
            if channel is None:
                framed = self.framing(self.allocation, peer, data)
                if framed is None:
                    no_permission += 1
                    continue
            else:
                padding = _ZEROS[: -len(data) & 3] if pad else b""
                framed = _CHANNEL_HEADER.pack(channel, len(data)) + data + padding
            if meter is not None:
                over = meter.spend(len(data), now)
                if over is not None:
                    self.dropped[over] += 1
                    continue
            try:
                self.deliver(framed)
            except Stalled:
                queue_full += 1
                continue
            except OSError:
                failed += 1
                continue
            delivered += 1
            delivered_bytes += len(data)
        return delivered, delivered_bytes, no_permission, queue_full, failed

    def _count(
        self, delivered: int, delivered_bytes: int, no_permission: int, queue_full: int,
        send_failed: int,
    ) -> None:  # fmt: skip
        """Once per batch: what reached the client, for its transport, and the drops."""
        by_transport = self.relayed
        by_transport.peer_to_client_datagrams += delivered
        by_transport.peer_to_client_bytes += delivered_bytes
        if delivered:
            senders: RelaySenders = self.allocation.runtime  # type: ignore[assignment]
            senders.peer_to_client_datagrams += delivered
            senders.peer_to_client_bytes += delivered_bytes
        if no_permission or queue_full or send_failed:
            dropped = self.dropped
            dropped[Drop.NO_PERMISSION] += no_permission
            dropped[Drop.QUEUE_FULL] += queue_full
            dropped[Drop.SEND_FAILED] += send_failed
