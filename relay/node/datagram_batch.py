"""Draining a non-blocking UDP socket in bounded batches: the shape of every UDP loop.

Owns the primitives of design §4's data path, shared by the STUN-only listener
(`drain`) and the TURN node's own batch readers:

- `BATCH_SIZE`: how many datagrams one batch reads at most before the loop yields to
  trio, so one busy socket cannot starve the others; a `DatagramBatch` may be asked for
  fewer (the data plane reads a socket that had one datagram once: `trelay.node.data_plane`);
- `ICMP_ERRNOS`: the errors a UDP socket reports about an earlier datagram (a peer's
  closed port, an unreachable host). They concern one destination, never end a loop,
  and count towards the batch so a flood of them cannot starve others (design §5);
- `send_reply`: a reply the kernel cannot take now is dropped and counted, never
  awaited (UDP never waits for a slow consumer);
- `UdpListenerStats`: plain counters, read by whoever publishes metrics;
- `RECEIVE_BUFFER`: the SO_RCVBUF asked for, so bursts queue in the kernel instead of
  being dropped while the loop is busy (the kernel caps it at net.core.rmem_max);
- `kernel_drops`: what the kernel dropped for one socket because its receive buffer was
  full (Linux's per-socket `sk_drops`, which also counts the rare datagram with a bad
  checksum), read at scrape time with one getsockopt(SO_MEMINFO) per socket: the same
  counter SO_RXQ_OVFL reports, without an ancillary-data `recvmsg` per datagram on the
  data path (`recvfrom_into` stays), and exact per socket where /proc/net/udp would be
  a parse of every UDP socket of the host. 0.6 us per socket: 10,000 allocations add
  about 6 ms to a scrape.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from trelay.turn.binding import Responder

MAX_DATAGRAM = 65535
BATCH_SIZE = 64
RECEIVE_BUFFER = 4 * 1024 * 1024


class DatagramBatch(Protocol):
    """Reads and handles up to `limit` datagrams without blocking; returns how many
    receives it made. Fewer than `limit`: it found the socket's queue empty."""

    def __call__(self, limit: int = BATCH_SIZE, /) -> int: ...


# Errors a UDP socket reports for an ICMP message about an earlier datagram: the next recv
# or send raises them. They concern one peer, not us. (Linux reports them only on
# connected sockets or with IP_RECVERR, which we do not set: enabling it would need the
# error queue drained with MSG_ERRQUEUE. Windows reports port unreachable as ECONNRESET
# on any UDP socket; BSDs as ECONNREFUSED on connected ones.)
ICMP_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,
        errno.EPROTO,
        errno.ENOPROTOOPT,
        errno.EOPNOTSUPP,
        errno.ETIMEDOUT,
    }
)


class DatagramSocket(Protocol):
    """The two calls `drain` makes; a non-blocking `socket.socket` (or a test's fake)."""

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...

    def sendto(self, data: bytes, address: Any, /) -> int: ...


@dataclass(slots=True)
class UdpListenerStats:
    """Plain counters, updated on the data path and read by whoever publishes metrics."""

    datagrams_received: int = 0
    replies_sent: int = 0
    # The kernel's send buffer was full (BlockingIOError): the reply was dropped.
    replies_dropped: int = 0
    # A send failed for another reason (an ICMP error of an earlier datagram, a
    # destination the kernel refuses): the reply was dropped.
    send_errors: int = 0
    # ICMP errors reported on receive.
    receive_errors: int = 0


def enlarge_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER) -> None:
    """Ask for a larger SO_RCVBUF; the kernel's cap applies, and a refusal is harmless."""
    with contextlib.suppress(OSError):  # only where the option is not supported
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# Linux: SO_MEMINFO (asm-generic's number where Python's socket module lacks the name)
# fills nine u32s; the ninth is SK_MEMINFO_DROPS (Linux 4.6+; older kernels give fewer).
_SO_MEMINFO: int = getattr(socket, "SO_MEMINFO", 55)
_MEMINFO_DROPS = struct.Struct("=I")
_DROPS_OFFSET = 8 * _MEMINFO_DROPS.size
KERNEL_DROPS_SUPPORTED = sys.platform == "linux"


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for `sock` (receive buffer full), since it was made;
    0 where the kernel does not say (not Linux, a closed socket)."""
    if not KERNEL_DROPS_SUPPORTED or sock.fileno() == -1:
        return 0
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _DROPS_OFFSET + 4)
    except OSError:
        return 0
    if len(info) < _DROPS_OFFSET + 4:
        return 0
    drops: int = _MEMINFO_DROPS.unpack_from(info, _DROPS_OFFSET)[0]
    return drops


def send_reply(sock: DatagramSocket, reply: bytes, address: Any, stats: UdpListenerStats) -> None:
    """Send one reply without blocking; a failure is counted, never raised."""
    try:
        sock.sendto(reply, address)
    except BlockingIOError:
        stats.replies_dropped += 1
    except OSError:
        # One destination's failure must not stop the listener.
        stats.send_errors += 1
    else:
        stats.replies_sent += 1


def drain(
    sock: DatagramSocket, responder: Responder, stats: UdpListenerStats, limit: int = BATCH_SIZE
) -> int:
    """Read and answer up to `limit` datagrams without blocking; returns how many."""
    for count in range(limit):
        try:
            data, address = sock.recvfrom(MAX_DATAGRAM)
        except BlockingIOError:
            return count
        except OSError as exc:
            if exc.errno not in ICMP_ERRNOS:
                raise
            stats.receive_errors += 1
            continue
        stats.datagrams_received += 1
        # An IPv6 socket reports (host, port, flowinfo, scope_id); the responder wants the
        # pair, the reply goes back to the full address.
        reply = responder(data, (address[0], address[1]))
        if reply is not None:
            send_reply(sock, reply, address, stats)
    return limit
