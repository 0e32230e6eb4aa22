"""UDP segmentation offload (GSO) for the data path: a run of datagrams in one `sendmsg`.

Owns design §4's batched sends. Within one drain batch, datagrams that leave the same
socket for the same destination with the same size (the last one may be shorter) are a
*run*; on Linux a run leaves in one `sendmsg` carrying a `UDP_SEGMENT` control message
(level `SOL_UDP` 17, option 103, `<linux/udp.h>`; not a constant in Python 3.11) with the
segment size, and the kernel (or the NIC) cuts it back into the datagrams the receiver
sees. One system call and one trip down the stack for the run instead of one per datagram.

- `SegmentingSocket`: one UDP socket's sends of runs. GSO until it fails once on that
  socket with an error that says GSO cannot work there (EIO: the device has no checksum
  offload; EMSGSIZE: past 64 KiB or the path MTU; EINVAL, ENOPROTOOPT, EOPNOTSUPP: a
  kernel or socket without it), then one datagram at a time for good; the switch is
  counted (`GsoCounters.fallbacks`). Whatever error a run's `sendmsg` meets, its
  datagrams are sent again one by one, so nothing is lost to GSO: a datagram fails only
  where a plain send of it fails too (an ICMP error of an earlier datagram is reported
  once, by the failed `sendmsg`, and the resends then go out).
- `MAX_SEGMENTS` / `MAX_RUN_BYTES`: a run's bounds (the kernel's UDP_MAX_SEGMENTS was
  64 before Linux 6.x raised it to 128; a UDP datagram's 64 KiB less the headers).
- `GSO_ENABLED`: false off Linux, or with `TRELAY_GSO=0` in the environment (to compare,
  or to run the interop tests with GSO forced off); every run is then sent one by one.

A run is a list of buffers the kernel gathers (`sendmsg`'s iovec): views of the receive
buffer, so a payload is never copied to be batched. Segments are the buffers themselves
(client to peer: one buffer per datagram) or slices of one contiguous buffer (peer to
client: the ChannelData frames written back to back); both are cut at `segment` bytes.
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
MAX_SEGMENTS = 64
MAX_RUN_BYTES = 65000
GSO_ENABLED = sys.platform == "linux" and os.environ.get("TRELAY_GSO", "1") != "0"
# Errors that mean GSO cannot work on this socket (see the module docstring).
FALLBACK_ERRNOS = frozenset(
    {errno.EIO, errno.EMSGSIZE, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
_SEGMENT_SIZE = struct.Struct("=H")  # a u16 in host order (`udp_cmsg_send`)


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
    """One UDP socket's sends of runs: GSO while it works there, else one by one."""

    __slots__ = ("counters", "segmenting", "sock")

    def __init__(self, sock: socket.socket, counters: GsoCounters) -> None:
        self.sock = sock
        self.counters = counters
        self.segmenting = GSO_ENABLED

    def send_run(self, buffers: Sequence[Buffer], segment: int, count: int, address: Any) -> int:
        """Send the `count` datagrams of `buffers`, cut at `segment` (> 0) bytes, to
        `address` (None on a connected socket); return how many of them failed (each as a
        plain send of it would have: the kernel refused it)."""
        if self.segmenting:
            try:
                if address is None:
                    self.sock.sendmsg(buffers, segment_control(segment))
                else:
                    self.sock.sendmsg(buffers, segment_control(segment), 0, address)
            except OSError as exc:
                if exc.errno in FALLBACK_ERRNOS:
                    self.segmenting = False
                    self.counters.fallbacks += 1
            else:
                counters = self.counters
                counters.runs += 1
                counters.segments += count
                return 0
        return self._one_by_one(buffers, segment, address)

    def _one_by_one(self, buffers: Sequence[Buffer], segment: int, address: Any) -> int:
        send, sendto = self.sock.send, self.sock.sendto
        failed = 0
        for buffer in buffers:
            view = memoryview(buffer)
            for start in range(0, len(view), segment):
                try:
                    if address is None:
                        send(view[start : start + segment])
                    else:
                        sendto(view[start : start + segment], address)
                except OSError:
                    failed += 1
        return failed
