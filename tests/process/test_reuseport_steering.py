"""The supervisor's reuseport program: the kernel hands each datagram to the socket
`worker_for` names, over IPv4, IPv6 and IPv4 on a dual-stack socket; a socket of the
group connected to one client takes that client's datagrams and nobody else's moves."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from trelay.process.reuseport_steering import attach_steering, steering_program, worker_for

WORKERS = 4
CLIENTS = 64


@contextmanager
def group(family: socket.AddressFamily, host: str) -> Iterator[tuple[list[socket.socket], int]]:
    """`WORKERS` SO_REUSEPORT sockets on one port of `host`, with the program."""
    with ExitStack() as stack:
        socks: list[socket.socket] = []
        port = 0
        for _ in range(WORKERS):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.setblocking(False)
            socks.append(sock)
        attach_steering(socks[0], WORKERS)
        yield socks, port


def deliveries(socks: list[socket.socket]) -> dict[bytes, int]:
    """Which socket got each queued datagram (by its payload)."""
    got: dict[bytes, int] = {}
    for index, sock in enumerate(socks):
        for _ in range(10 * CLIENTS):
            try:
                got[sock.recv(64)] = index
            except BlockingIOError:
                break
    return got


@pytest.mark.parametrize(
    ("family", "listen", "source"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "::", "127.0.0.1"),  # IPv4 on a dual-stack group
    ],
)
def test_each_datagram_reaches_the_socket_worker_for_names(
    family: socket.AddressFamily, listen: str, source: str
) -> None:
    client_family = socket.AF_INET if "." in source else socket.AF_INET6
    with group(family, listen) as (socks, port), ExitStack() as stack:
        expected: dict[bytes, int] = {}
        for number in range(CLIENTS):
            client = stack.enter_context(socket.socket(client_family, socket.SOCK_DGRAM))
            client.bind((source, 0))
            client.sendto(b"%d" % number, (source, port))
            expected[b"%d" % number] = worker_for(client.getsockname()[:2], WORKERS)
        assert deliveries(socks) == expected
        assert len(set(expected.values())) == WORKERS  # every worker gets some


def test_a_connected_socket_takes_its_client_and_moves_no_one_else() -> None:
    with group(socket.AF_INET, "127.0.0.1") as (socks, port), ExitStack() as stack:
        clients = []
        for _ in range(CLIENTS):
            client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            client.bind(("127.0.0.1", 0))
            clients.append(client)
        captured = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        captured.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        captured.bind(("127.0.0.1", port))
        captured.connect(clients[0].getsockname())
        captured.setblocking(False)
        for number, client in enumerate(clients):
            client.sendto(b"%d" % number, ("127.0.0.1", port))
        got = deliveries([*socks, captured])
        assert got.pop(b"0") == WORKERS  # the connected socket, past the group's N
        assert got == {
            b"%d" % n: worker_for(c.getsockname()[:2], WORKERS) for n, c in enumerate(clients) if n
        }


def test_the_program_is_checked() -> None:
    assert len(steering_program(2)) == 27 * 8
    with pytest.raises(ValueError, match="workers: 0"):
        steering_program(0)
