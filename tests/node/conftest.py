"""Fixtures of the node's tests: `sockets`, a factory of bound, non-blocking loopback UDP
sockets, all closed when the test ends (the data plane's and the idle wait's tests)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest


@pytest.fixture
def sockets() -> Iterator[Callable[[], socket.socket]]:
    with ExitStack() as stack:

        def make() -> socket.socket:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            return sock

        yield make
