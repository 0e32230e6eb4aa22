"""The UDP listener over real loopback sockets, and its drain loop with scripted sockets."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trelay.node.datagram_batch import BATCH_SIZE, MAX_DATAGRAM, UdpListenerStats, drain
from trelay.node.frontend import ResponderFrontend
from trelay.node.udp_listener import open_udp_socket, serve_udp
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.binding import BindingResponder

TIMEOUT = 10


def binding_request(transaction_id: bytes | None = None) -> bytes:
    tid = new_transaction_id() if transaction_id is None else transaction_id
    return encode_message(Message(Method.BINDING, MessageClass.REQUEST, tid))


def mapped(reply: bytes) -> tuple[str, int] | None:
    attribute = decode_message(reply).get(XorMappedAddress)
    return None if attribute is None else attribute.address


class Listener:
    def __init__(self, address: tuple[str, int], stats: UdpListenerStats) -> None:
        self.address = address
        self.stats = stats


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    stats = UdpListenerStats()
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            lambda task_status: serve_udp(
                "127.0.0.1",
                0,
                ResponderFrontend(BindingResponder("test")),
                stats=stats,
                task_status=task_status,
            )
        )
        yield Listener(address, stats)
        nursery.cancel_scope.cancel()


async def client_socket(family: int = socket.AF_INET) -> trio.socket.SocketType:
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
    return sock


async def test_started_reports_the_bound_address(listener: Listener) -> None:
    host, port = listener.address
    assert host == "127.0.0.1"
    assert port > 0


async def test_a_request_is_answered_with_the_source_address(listener: Listener) -> None:
    with await client_socket() as client, trio.fail_after(TIMEOUT):
        tid = new_transaction_id()
        await client.sendto(binding_request(tid), listener.address)
        reply, origin = await client.recvfrom(MAX_DATAGRAM)
        assert origin == listener.address
        assert decode_message(reply).transaction_id == tid
        assert mapped(reply) == client.getsockname()


async def test_a_burst_is_all_answered(listener: Listener) -> None:
    # More than one batch, all sent before the listener gets to run.
    count = 2 * BATCH_SIZE + 7
    tids = {new_transaction_id() for _ in range(count)}
    with await client_socket() as client, trio.fail_after(TIMEOUT):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for tid in tids:
            await client.sendto(binding_request(tid), listener.address)
        answered = set()
        for _ in range(count):
            reply, _ = await client.recvfrom(MAX_DATAGRAM)
            answered.add(decode_message(reply).transaction_id)
            assert mapped(reply) == client.getsockname()
    assert answered == tids
    assert listener.stats.replies_sent == count


async def test_garbage_does_not_end_the_loop(listener: Listener) -> None:
    with await client_socket() as client, trio.fail_after(TIMEOUT):
        for junk in (b"", b"\x00", b"GET / HTTP/1.1\r\n\r\n", bytes(20), b"\xff" * 1500):
            await client.sendto(junk, listener.address)
        # A datagram of the maximum size the socket API allows over IPv4.
        await client.sendto(b"\x00" * 65507, listener.address)
        await client.sendto(binding_request(), listener.address)
        reply, _ = await client.recvfrom(MAX_DATAGRAM)
        assert mapped(reply) == client.getsockname()
    # The six unanswered datagrams were read (and dropped) before the request.
    assert listener.stats.datagrams_received == 7
    assert listener.stats.replies_sent == 1


async def test_answering_a_closed_port_does_not_end_the_loop(listener: Listener) -> None:
    # The request leaves from a plain socket that is closed before the listener can run
    # (it only runs when this task checkpoints), so its reply hits a closed port and the
    # kernel answers with ICMP port unreachable. Linux reports that (ECONNREFUSED) only
    # on connected sockets; `test_drain_survives_a_real_econnrefused` covers the error
    # itself. Here: whatever the platform reports, the listener keeps answering.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as doomed:
        doomed.bind(("127.0.0.1", 0))
        doomed.sendto(binding_request(), listener.address)
    with await client_socket() as client, trio.fail_after(TIMEOUT):
        for _ in range(3):
            await client.sendto(binding_request(), listener.address)
            reply, _ = await client.recvfrom(MAX_DATAGRAM)
            assert mapped(reply) == client.getsockname()
    assert listener.stats.datagrams_received == 4


async def test_ipv6_listener_takes_ipv6_clients_and_shares_the_port_with_ipv4() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    responder = ResponderFrontend(BindingResponder("test"))
    async with trio.open_nursery() as nursery:
        try:
            v6 = await nursery.start(serve_udp, "::1", 0, responder)
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        # IPV6_V6ONLY: an IPv4 listener on the same port number can coexist.
        v4 = await nursery.start(serve_udp, "127.0.0.1", v6[1], responder)
        assert v4 == ("127.0.0.1", v6[1])
        with await client_socket(socket.AF_INET6) as client, trio.fail_after(TIMEOUT):
            await client.sendto(binding_request(), v6)
            reply, _ = await client.recvfrom(MAX_DATAGRAM)
            assert mapped(reply) == client.getsockname()[:2]
        nursery.cancel_scope.cancel()


async def test_open_udp_socket_sets_v6only() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        sock = await open_udp_socket("::", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert sock.getblocking() is False


# --- drain() with real sockets, synchronously -------------------------------------------


def echo_length(data: bytes, source: tuple[str, int]) -> bytes | None:
    return len(data).to_bytes(4, "big")


def test_drain_stops_at_the_batch_bound_and_resumes() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        client.bind(("127.0.0.1", 0))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        total = BATCH_SIZE + 10
        for _ in range(total):
            client.sendto(b"x", server.getsockname())
        stats = UdpListenerStats()
        assert drain(server, echo_length, stats) == BATCH_SIZE
        assert drain(server, echo_length, stats) == 10
        assert drain(server, echo_length, stats) == 0
        assert stats.datagrams_received == total
        assert stats.replies_sent == total
        client.settimeout(TIMEOUT)
        replies = [client.recvfrom(16)[0] for _ in range(total)]
        assert replies == [b"\x00\x00\x00\x01"] * total


def test_drain_survives_a_real_econnrefused() -> None:
    # Linux reports ICMP errors to connected UDP sockets, so connect the "listener" to a
    # peer, let the peer send one datagram and close, then make an ICMP error pending.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        peer.bind(("127.0.0.1", 0))
        server.connect(peer.getsockname())
        peer.sendto(b"request", server.getsockname())
        peer.close()
        server.send(b"to a closed port")  # the ICMP port unreachable comes back
        stats = UdpListenerStats()
        # Bounded retries: ICMP delivery on loopback is immediate on Linux, but not promised.
        for _ in range(100):
            drain(server, echo_length, stats)
            if stats.datagrams_received:
                break
        assert stats.datagrams_received == 1
        assert stats.replies_sent + stats.send_errors == 1
        # The pending error came first; the reply to the closed port may add a second.
        assert stats.receive_errors >= 1


# --- drain() with a scripted socket, for the errors a kernel will not produce on cue ---


class ScriptedSocket:
    """Plays back recvfrom results (datagrams or exceptions) and records or fails sends."""

    def __init__(self, incoming: list[tuple[bytes, Any] | OSError], send_errors: list[OSError]):
        self.incoming = incoming
        self.send_errors = send_errors
        self.sent: list[tuple[bytes, Any]] = []

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        assert bufsize == MAX_DATAGRAM
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "empty")
        item = self.incoming.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendto(self, data: bytes, address: Any, /) -> int:
        if self.send_errors:
            raise self.send_errors.pop(0)
        self.sent.append((data, address))
        return len(data)


PEER = ("198.51.100.1", 4000)
PEER6 = ("2001:db8::1", 4000, 0, 0)


def test_drain_drops_and_counts_replies_the_kernel_cannot_take() -> None:
    sock = ScriptedSocket(
        [(b"a", PEER), (b"b", PEER), (b"c", PEER6)],
        [BlockingIOError(errno.EAGAIN, "full"), ConnectionRefusedError(errno.ECONNREFUSED, "")],
    )
    stats = UdpListenerStats()
    assert drain(sock, echo_length, stats) == 3
    assert stats.replies_dropped == 1
    assert stats.send_errors == 1
    assert stats.replies_sent == 1
    # The reply goes to the full IPv6 address (flow info and scope id kept).
    assert sock.sent == [(b"\x00\x00\x00\x01", PEER6)]


def test_drain_ignores_icmp_errors_on_receive() -> None:
    sock = ScriptedSocket(
        [
            ConnectionRefusedError(errno.ECONNREFUSED, ""),
            OSError(errno.EHOSTUNREACH, ""),
            OSError(errno.ENETUNREACH, ""),
            (b"ok", PEER),
        ],
        [],
    )
    stats = UdpListenerStats()
    assert drain(sock, echo_length, stats) == 4
    assert stats.receive_errors == 3
    assert sock.sent == [(b"\x00\x00\x00\x02", PEER)]


def test_drain_raises_errors_that_are_not_about_a_peer() -> None:
    sock = ScriptedSocket([OSError(errno.EBADF, "closed")], [])
    with pytest.raises(OSError, match="closed"):
        drain(sock, echo_length, UdpListenerStats())


def test_a_flood_of_icmp_errors_is_bounded_by_the_batch() -> None:
    errors: list[tuple[bytes, Any] | OSError] = [
        ConnectionRefusedError(errno.ECONNREFUSED, "") for _ in range(BATCH_SIZE + 5)
    ]
    sock = ScriptedSocket(errors, [])
    stats = UdpListenerStats()
    assert drain(sock, echo_length, stats) == BATCH_SIZE
    assert stats.receive_errors == BATCH_SIZE
    assert len(sock.incoming) == 5
