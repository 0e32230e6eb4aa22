"""A TURN peer on a plain, non-blocking UDP socket on loopback, for the node tests that send
bursts: a burst leaves with no trio checkpoint between datagrams (so the node sees it as one
run), and a 1 MiB receive buffer holds what the relay sends back until the test reads it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trelay.turn.addressing import Address


@asynccontextmanager
async def raw_peer() -> AsyncIterator[socket.socket]:
    """The peer's socket, bound to 127.0.0.1 and a free port; closed when the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    with sock:
        yield sock


def address(sock: socket.socket) -> Address:
    """Where `sock` is bound, as a TURN address."""
    host, port = sock.getsockname()[:2]
    return host, port
