"""UDP segmentation offload for the data path: runs sent in one `sendmsg` (GSO), runs
received in one buffer (GRO).

Owns design §4's batched sends and receives.

Sends. Within one drain batch, datagrams that leave the same socket for the same
destination with the same size (the last one may be shorter) are a *run*; on Linux a
run leaves in one `sendmsg` carrying a `UDP_SEGMENT` control message (level `SOL_UDP`
17, option 103, `<linux/udp.h>`; not a constant in Python 3.11) with the segment size,
and the kernel (or the NIC) cuts it back into the datagrams the receiver sees. One
system call and one trip down the stack for the run instead of one per datagram.

- `SegmentingSocket`: one UDP socket's sends of runs. GSO until it fails once on that
  socket with an error that says GSO cannot work there (EIO: the device has no checksum
  offload; EINVAL, ENOPROTOOPT, EOPNOTSUPP: a kernel or socket without it), then one
  datagram at a time for good; EMSGSIZE (a segment past the path MTU, or a run past
  64 KiB) only stops GSO for segments that large. Each switch is counted
  (`GsoCounters.fallbacks`). Whatever error a run's `sendmsg` meets, its
  datagrams are sent again one by one, so nothing is lost to GSO: a datagram fails only
  where a plain send of it fails too (an ICMP error of an earlier datagram is reported
  once, by the failed `sendmsg`, and the resends then go out).
- A run is a list of buffers the kernel gathers (`sendmsg`'s iovec) and cuts every
  `segment` bytes: views of a receive buffer, so a payload is never copied to be
  batched. Client to peer: one buffer per payload; peer to client: the ChannelData
  frames back to back in one buffer, or (a GRO receive) each 4-byte header a buffer of
  its own between the payloads. The one-by-one fallback cuts the same way and gathers
  each datagram from the buffers it spans.
- `MAX_SEGMENTS` / `MAX_RUN_BYTES`: a run's bounds (the kernel's UDP_MAX_SEGMENTS was
  64 before Linux 6.x raised it to 128; a UDP datagram's 64 KiB less the headers).

Receives. With `UDP_GRO` (104) on a socket, the kernel may queue a burst of one flow as
one buffer, its segment size in a control message (`gro_segment`): what a NIC with GRO
delivers, or on loopback a sender's GSO send (a socket without UDP_GRO gets the same
send cut into datagrams). Two readers split such a buffer into views: a relay socket's
(`trelay.node.data_path.PeerReader`: one GSO run to the client) and a UDP listener's
(`ClientReader`: each segment checked as a datagram of its own, its payload joining the
run to its peer). A GRO receive needs `recvmsg` with ancillary data, dearer than
`recvfrom_into`, so `GroState` turns GRO on for a socket only while it is busy, and off
when it quiets down (with the care that switch needs: see its docstring).

`GSO_ENABLED` / `GRO_ENABLED`: false off Linux, or with `TRELAY_GSO=0` / `TRELAY_GRO=0`
in the environment (to compare, or to run the interop tests with them forced off).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Buffer = bytes | bytearray | memoryview

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_SEGMENTS = 64
MAX_RUN_BYTES = 65000
GSO_ENABLED = sys.platform == "linux" and os.environ.get("TRELAY_GSO", "1") != "0"
# Errors that mean GSO cannot work on this socket (see the module docstring).
FALLBACK_ERRNOS = frozenset(
    {errno.EIO, errno.EMSGSIZE, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
_SEGMENT_SIZE = struct.Struct("=H")  # a u16 in host order (`udp_cmsg_send`)
MAX_DATAGRAM_SEGMENT = 0xFFFF
GRO_ENABLED = GSO_ENABLED and os.environ.get("TRELAY_GRO", "1") != "0"
# The ancillary data a GRO receive may carry: the segment size, an int (`udp_cmsg_recv`).
GRO_CONTROL_SPACE = socket.CMSG_SPACE(4)
_GRO_SEGMENT = struct.Struct("=i")


# When a relay socket turns GRO on and off (`GroState`): on after a batch of at least
# `GRO_BUSY` datagrams, off after `GRO_QUIET_BATCHES` batches in a row of fewer than
# `GRO_QUIET` (a coalesced receive counts as its datagrams), or after
# `GRO_IDLE_BATCHES` busy batches in a row where nothing came coalesced (the senders'
# bursts are not coalesced on the way: GRO only costs), and then not again for
# `GRO_RETRY_BATCHES` busy batches, doubled at each such failure up to `GRO_MAX_RETRY`.
GRO_BUSY = 8
GRO_QUIET = 4
GRO_QUIET_BATCHES = 64
GRO_IDLE_BATCHES = 16
GRO_RETRY_BATCHES = 1024
GRO_MAX_RETRY = 1 << 20


def set_gro(sock: socket.socket, on: bool) -> bool:
    """Turn UDP_GRO on or off for `sock`; True if the kernel took it."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1 if on else 0)
    except OSError:
        return False
    return True


class GroState:
    """One socket's UDP_GRO (a relay socket's, a UDP listener's), on only while it is busy.

    Busy is what the reader reports as `received`: a relay socket (one allocation's
    peers) every datagram; a listener (many clients) only the datagrams that followed
    one of the same flow in a batch, since GRO coalesces within one flow and many
    clients' single datagrams would turn it on for nothing.

    A GRO receive costs a `recvmsg` with ancillary data, dearer than `recvfrom_into`
    (measured: -5% relayed per CPU-second at one datagram in flight per flow), and pays
    only when datagrams arrive in bursts of one flow. So GRO is off until a batch reads
    `GRO_BUSY` datagrams, and off again after `GRO_QUIET_BATCHES` quiet batches.
    `parse`: the reader must receive with `recvmsg` and split coalesced buffers. It
    stays true after GRO goes off until a batch empties the queue: what the kernel
    queued before the switch may still be coalesced; what it queues after is not.
    `allowed`: the reader can split a run (towards a UDP client); a moved client on
    another transport turns it off (`stop`). GRO that coalesces nothing while the socket
    is busy (senders whose bursts arrive as separate datagrams) goes off and waits
    longer each time before it is tried again.
    """

    __slots__ = ("allowed", "idle", "on", "parse", "quiet", "retry", "sock", "wait")

    def __init__(self, sock: socket.socket, allowed: bool) -> None:
        self.sock = sock
        self.allowed = allowed and GRO_ENABLED
        self.on = self.parse = False
        self.quiet = self.idle = self.wait = 0
        self.retry = GRO_RETRY_BATCHES

    def after_batch(self, received: int, coalesced: int, emptied: bool) -> None:
        """What a batch saw: datagrams `received`, `coalesced` of them beyond one per
        receive, and whether it found the queue empty."""
        if self.on:
            if received < GRO_QUIET:
                self.quiet += 1
                if self.quiet >= GRO_QUIET_BATCHES:
                    self.stop()
                return
            self.quiet = 0
            if coalesced:
                self.idle = 0
                return
            self.idle += 1
            if self.idle >= GRO_IDLE_BATCHES:  # busy, and GRO did nothing: back off
                self.stop()
                self.wait, self.retry = self.retry, min(2 * self.retry, GRO_MAX_RETRY)
        elif self.parse:
            self.parse = not emptied  # drained since GRO went off: nothing coalesced left
        elif self.allowed and received >= GRO_BUSY:
            if self.wait:
                self.wait -= 1
                return
            self.on = self.parse = set_gro(self.sock, True)
            self.quiet = self.idle = 0

    def allow(self, allowed: bool) -> None:
        """Whether GRO may be used from now on (a moved client's transport decides)."""
        self.allowed = allowed and GRO_ENABLED
        if not self.allowed:
            self.stop()

    def stop(self) -> None:
        """GRO off (parsing goes on until the queue is drained)."""
        if self.on and set_gro(self.sock, False):
            self.on = False
            self.quiet = self.idle = 0


def gro_segment(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size a GRO receive reported, 0 if none (one datagram)."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SEGMENT.size:
            segment: int = _GRO_SEGMENT.unpack_from(data)[0]
            return segment
    return 0


@dataclass(slots=True)
class GsoCounters:
    """Plain integers, read by `trelay.ops.metrics` at scrape time."""

    runs: int = 0  # sendmsg calls that carried a run with UDP_SEGMENT
    segments: int = 0  # datagrams in those runs
    fallbacks: int = 0  # sockets that turned GSO off after a failure


def segment_control(size: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data of a GSO send of `size`-byte segments."""
    return [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))]


class SegmentingSocket:
    """One UDP socket's sends of runs: GSO while it works there, else one by one.

    EMSGSIZE says a segment does not fit the path (its MTU: a 1476-byte ChannelData
    frame through a 1500-byte link): runs of that size and larger go one by one from
    then on (`max_segment`), smaller ones keep GSO; each such lowering is counted as a
    fallback. Any other GSO error turns GSO off for the socket, once.
    """

    __slots__ = ("counters", "max_segment", "segmenting", "sock")

    def __init__(self, sock: socket.socket, counters: GsoCounters) -> None:
        self.sock = sock
        self.counters = counters
        self.segmenting = GSO_ENABLED
        self.max_segment = MAX_DATAGRAM_SEGMENT

    def send_run(self, buffers: Sequence[Buffer], segment: int, count: int, address: Any) -> int:
        """Send the `count` datagrams of `buffers`, cut at `segment` (> 0) bytes, to
        `address` (None on a connected socket); return how many of them failed (each as a
        plain send of it would have: the kernel refused it)."""
        if self.segmenting and segment <= self.max_segment:
            try:
                if address is None:
                    self.sock.sendmsg(buffers, segment_control(segment))
                else:
                    self.sock.sendmsg(buffers, segment_control(segment), 0, address)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # too large for the path: smaller ones fit
                    self.max_segment = segment - 1
                    self.counters.fallbacks += 1
                elif exc.errno in FALLBACK_ERRNOS:
                    self.segmenting = False
                    self.counters.fallbacks += 1
            else:
                counters = self.counters
                counters.runs += 1
                counters.segments += count
                return 0
        return self._one_by_one(buffers, segment, address)

    def _one_by_one(self, buffers: Sequence[Buffer], segment: int, address: Any) -> int:
        """What the kernel would have done: the buffers as one byte stream, cut every
        `segment` bytes; each datagram gathered from its pieces (a header and a payload
        may lie in two buffers) and sent alone."""
        failed = filled = 0
        pieces: list[memoryview] = []
        for buffer in buffers:
            view = memoryview(buffer)
            start, length = 0, len(view)
            while start < length:
                take = min(segment - filled, length - start)
                pieces.append(view[start : start + take])
                filled += take
                start += take
                if filled == segment:
                    failed += self._send_one(pieces, address)
                    pieces, filled = [], 0
        if pieces:
            failed += self._send_one(pieces, address)
        return failed

    def _send_one(self, pieces: list[memoryview], address: Any) -> int:
        """One datagram from its pieces; 1 if the kernel refused it, else 0."""
        sock = self.sock
        try:
            if len(pieces) == 1:
                if address is None:
                    sock.send(pieces[0])
                else:
                    sock.sendto(pieces[0], address)
            elif address is None:
                sock.sendmsg(pieces)
            else:
                sock.sendmsg(pieces, (), 0, address)
        except OSError:
            return 1
        return 0
