"""The UDP listener: one socket, drained in batches, every datagram handed to a responder.

Owns the UDP data-path loop of DESIGN §4: wait until the socket is readable, then read
and answer up to `BATCH_SIZE` datagrams without awaiting anything (non-blocking
`recvfrom` and `sendto`, no checkpoint and no log line per packet), then wait again. When
a batch fills up, it yields once with a checkpoint so other tasks run before the next one.

Invariants:
- UDP never waits for a slow consumer: a reply the kernel cannot take now
  (`BlockingIOError`) is dropped and counted in `UdpListenerStats.replies_dropped`.
- ICMP errors reported on the socket (ECONNREFUSED after answering a closed port, host or
  network unreachable, ...) are counted and ignored; they never end the loop (DESIGN §5).
- An IPv6 socket is bound with IPV6_V6ONLY so listeners on 0.0.0.0 and :: can share a port.
- Datagrams up to 65535 bytes are read whole.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from relay.frontend import ClientFrontend
from turn.binding import Responder

MAX_DATAGRAM = 65535
BATCH_SIZE = 64

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


async def open_udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket for `host` (a literal or a name) and `port`."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises rather than return nothing
        raise OSError(f"no address for {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            # Without V6ONLY a socket on :: also takes IPv4 and a second listener on 0.0.0.0
            # (same port) fails with EADDRINUSE.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_udp(
    host: str,
    port: int,
    frontend: ClientFrontend,
    *,
    stats: UdpListenerStats | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand every datagram on (host, port) to `frontend` and send its reply until cancelled.

    Calls `task_status.started((host, port))` with the bound address once the socket is
    bound (port 0 picks a free port).
    """
    if stats is None:
        stats = UdpListenerStats()
    sock = await open_udp_socket(host, port)
    with sock:
        bound = sock.getsockname()
        responder = frontend.udp_listener(sock, (bound[0], bound[1]))
        task_status.started((bound[0], bound[1]))
        while True:
            await trio.lowlevel.wait_readable(sock)
            # A full batch means more may be queued: let other tasks run, then go on.
            while drain(sock, responder, stats) == BATCH_SIZE:
                await trio.lowlevel.checkpoint()


def drain(sock: DatagramSocket, responder: Responder, stats: UdpListenerStats) -> int:
    """Read and answer up to BATCH_SIZE datagrams without blocking; returns how many.

    An ICMP error counts towards the batch too, so a flood of them cannot starve others.
    """
    for count in range(BATCH_SIZE):
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
        if reply is None:
            continue
        try:
            sock.sendto(reply, address)
        except BlockingIOError:
            stats.replies_dropped += 1
        except OSError:
            # One destination's failure must not stop the listener.
            stats.send_errors += 1
        else:
            stats.replies_sent += 1
    return BATCH_SIZE
