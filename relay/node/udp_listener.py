"""The UDP listener: one socket, read in batches by what its frontend makes of it.

Owns the socket and the loop of design §4: bind, ask the frontend for the socket's
`DatagramBatch` (`trelay.node.datagram_batch`: a STUN-only `drain`, or the TURN node's reader
with its inline ChannelData path), and run batches whenever the socket is readable,
without awaiting anything in between (no checkpoint and no log line per packet):
- with the TURN node, in its data plane (`trelay.node.data_plane`), beside the relay
  sockets, so one wakeup serves both directions; the task only keeps the socket open
  and takes it out of the plane (before closing it) when it ends;
- else in this task: wait until the socket is readable, run batches; when a batch fills
  up, yield once with a checkpoint so other tasks run before the next one.

Invariants:
- An IPv6 socket is bound with IPV6_V6ONLY so listeners on 0.0.0.0 and :: can share a port.
- The receive buffer is enlarged (`RECEIVE_BUFFER`) so that bursts wait in the kernel.
- `serve_udp(open_socket=...)` serves a socket bound elsewhere: a worker process of
  `trelay.process.workers` inherits its SO_REUSEPORT socket from the supervisor (the
  DTLS listener takes the same `SocketOpener`).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import trio

from trelay.node.datagram_batch import BATCH_SIZE, UdpListenerStats, enlarge_receive_buffer
from trelay.node.frontend import ClientFrontend

# How a listener gets its bound, non-blocking socket for (host, port).
SocketOpener = Callable[[str, int], Awaitable[socket.socket]]


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
        enlarge_receive_buffer(sock)
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
    open_socket: SocketOpener = open_udp_socket,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand every datagram on (host, port) to `frontend` and send its reply until cancelled.

    Calls `task_status.started((host, port))` with the bound address once the socket is
    bound (port 0 picks a free port). `open_socket` makes the socket (a worker's: the one
    it inherited); it is closed on leaving.
    """
    if stats is None:
        stats = UdpListenerStats()
    sock = await open_socket(host, port)
    with sock:
        bound = sock.getsockname()
        batch = frontend.udp_listener(sock, (bound[0], bound[1]), stats)
        plane = frontend.datagram_plane()
        if plane is not None:
            plane.add(sock, batch)
            task_status.started((bound[0], bound[1]))
            try:
                await trio.sleep_forever()
            finally:
                plane.discard(sock)  # before `with sock` closes it (DataPlane's rule)
        task_status.started((bound[0], bound[1]))
        while True:
            await trio.lowlevel.wait_readable(sock)
            # A full batch means more may be queued: let other tasks run, then go on.
            while batch() == BATCH_SIZE:
                await trio.lowlevel.checkpoint()
