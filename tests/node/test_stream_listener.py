"""The TCP/TLS listener over real loopback connections."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from trelay.node.frontend import ResponderFrontend
from trelay.node.stream_listener import StreamListenerStats, serve_stream
from trelay.node.tls import SelfSignedCertificate, context_from_pem, generate_self_signed
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.channel_data import encode_channel_data
from trelay.stun.codes import MessageClass, Method
from trelay.stun.framing import StreamDeframer
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.binding import BindingResponder

TIMEOUT = 10
# Only for tests whose client never sends a complete message, so their outcome is the
# same however slow the machine is; the other tests keep the default of 30 s.
SHORT_IDLE = 0.3


def binding_request(transaction_id: bytes) -> bytes:
    return encode_message(Message(Method.BINDING, MessageClass.REQUEST, transaction_id))


class Server:
    def __init__(self, address: tuple[str, int], stats: StreamListenerStats) -> None:
        self.address = address
        self.stats = stats


@pytest.fixture(scope="module")
def certificate_pem() -> tuple[bytes, bytes]:
    certificate = generate_self_signed(["127.0.0.1"])
    return certificate.cert_pem, certificate.key_pem


@pytest.fixture
def server_tls(certificate_pem: tuple[bytes, bytes]) -> ssl.SSLContext:
    return context_from_pem(SelfSignedCertificate(*certificate_pem))


@pytest.fixture
def client_tls(certificate_pem: tuple[bytes, bytes]) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=certificate_pem[0].decode("ascii"))


async def start_server(
    nursery: trio.Nursery,
    *,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = 30.0,
) -> Server:
    stats = StreamListenerStats()

    async def run(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        await serve_stream(
            "127.0.0.1",
            0,
            ResponderFrontend(BindingResponder("test")),
            ssl_context=ssl_context,
            idle_timeout=idle_timeout,
            stats=stats,
            task_status=task_status,
        )

    address = await nursery.start(run)
    return Server(address, stats)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def read_replies(stream: trio.abc.Stream, count: int) -> list[Message]:
    """Read until `count` STUN messages arrived (the caller bounds the time)."""
    deframer = StreamDeframer()
    replies: list[Message] = []
    while len(replies) < count:
        data = await stream.receive_some(65536)
        assert data, f"connection closed after {len(replies)} of {count} replies"
        replies.extend(decode_message(frame.data) for frame in deframer.feed(bytes(data)))
    return replies


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    received = b""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return received
        if not data:
            return received
        received += data


def local_address(stream: trio.SocketStream) -> tuple[str, int]:
    host, port = stream.socket.getsockname()[:2]
    return host, port


async def test_started_reports_the_bound_address(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    assert server.address[0] == "127.0.0.1"
    assert server.address[1] > 0


async def test_merged_and_split_messages_are_all_answered_in_order(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery)
    tids = [new_transaction_id() for _ in range(6)]
    wire = b"".join(binding_request(tid) for tid in tids)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            # Three messages merged in one write...
            await stream.send_all(wire[: 3 * 20])
            # ...then the rest in 7-byte pieces, so headers and bodies are cut anywhere.
            for offset in range(3 * 20, len(wire), 7):
                await stream.send_all(wire[offset : offset + 7])
            replies = await read_replies(stream, len(tids))
            assert [reply.transaction_id for reply in replies] == tids
            for reply in replies:
                assert reply.message_class is MessageClass.SUCCESS
                assert reply.get(XorMappedAddress) == XorMappedAddress(*local_address(stream))
    assert server.stats.frames_received == len(tids)


async def test_one_byte_at_a_time(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    tid = new_transaction_id()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            for byte in binding_request(tid):
                await stream.send_all(bytes([byte]))
            (reply,) = await read_replies(stream, 1)
            assert reply.transaction_id == tid


async def test_channel_data_on_a_channel_not_bound_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    """A STUN-only frontend binds no channel: over a stream, ChannelData is lost framing
    (the connection is closed, nothing after it answered); over UDP it is dropped."""
    server = await start_server(nursery)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            await stream.send_all(
                encode_channel_data(0x4000, b"hello", pad=True)
                + binding_request(new_transaction_id())
            )
            assert await read_until_closed(stream) == b""
    assert server.stats.closed_lost_framing == 1
    assert server.stats.frames_received == 1  # the ChannelData; the request is not read


async def test_undecodable_stun_gets_no_reply_but_keeps_the_connection(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery)
    tid = new_transaction_id()
    # Well framed (cookie, aligned length) but an attribute that does not decode.
    bad = b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x20\x00\x03abc\x00"
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            await stream.send_all(bad + binding_request(tid))
            (reply,) = await read_replies(stream, 1)
            assert reply.transaction_id == tid


@pytest.mark.parametrize(
    "garbage",
    [
        # A TLS ClientHello on the plain TCP port (first byte 0x16: no magic cookie).
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
        b"\xff" * 64,
        # A STUN-looking header without the magic cookie (an RFC 3489 client).
        b"\x00\x01\x00\x00" + bytes(16),
    ],
)
async def test_garbage_closes_the_connection_only(nursery: trio.Nursery, garbage: bytes) -> None:
    server = await start_server(nursery)
    with trio.fail_after(TIMEOUT):
        bad = await trio.open_tcp_stream(*server.address)
        async with bad:
            await bad.send_all(garbage)
            assert await read_until_closed(bad) == b""
        # The listener is still there for the next client.
        good = await trio.open_tcp_stream(*server.address)
        async with good:
            tid = new_transaction_id()
            await good.send_all(binding_request(tid))
            (reply,) = await read_replies(good, 1)
            assert reply.transaction_id == tid
    assert server.stats.closed_malformed == 1


async def test_replies_before_garbage_in_an_earlier_write_are_sent(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery)
    tid = new_transaction_id()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            await stream.send_all(binding_request(tid))
            (reply,) = await read_replies(stream, 1)
            assert reply.transaction_id == tid
            await stream.send_all(b"\xff\xff\xff\xff")
            assert await read_until_closed(stream) == b""


async def test_a_silent_client_is_closed_after_the_idle_timeout(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, idle_timeout=SHORT_IDLE)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            assert await read_until_closed(stream) == b""
    assert server.stats.closed_idle == 1


async def test_a_client_stalled_mid_message_is_closed(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, idle_timeout=SHORT_IDLE)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            # Half a header: the deframer waits for the rest, which never comes.
            await stream.send_all(binding_request(new_transaction_id())[:10])
            assert await read_until_closed(stream) == b""
    assert server.stats.closed_idle == 1
    assert server.stats.writes == 0


async def test_http_get_looks_like_channel_data_and_is_closed_at_once(
    nursery: trio.Nursery,
) -> None:
    # "GE" is 0x4745, a channel number; "T " a length of 21536: a frame that would never
    # end, closed on its header since no channel is bound (not after the idle timeout).
    server = await start_server(nursery)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await read_until_closed(stream) == b""
    assert server.stats.closed_lost_framing == 1
    assert server.stats.closed_idle == 0


async def test_a_reset_connection_does_not_disturb_the_listener(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    with trio.fail_after(TIMEOUT):
        doomed = await trio.open_tcp_stream(*server.address)
        await doomed.send_all(binding_request(new_transaction_id())[:10])
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        doomed.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await doomed.aclose()
        good = await trio.open_tcp_stream(*server.address)
        async with good:
            tid = new_transaction_id()
            await good.send_all(binding_request(tid))
            (reply,) = await read_replies(good, 1)
            assert reply.transaction_id == tid


async def test_a_clean_close_by_the_client_is_counted(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        await stream.send_eof()
        assert await read_until_closed(stream) == b""
        await stream.aclose()
    assert server.stats.connections_accepted == 1
    assert server.stats.connections_closed == 1
    assert server.stats.closed_idle == server.stats.closed_malformed == 0


# --- TLS ------------------------------------------------------------------------------------


async def open_tls(
    address: tuple[str, int], client_tls: ssl.SSLContext
) -> tuple[trio.SSLStream[trio.SocketStream], tuple[str, int]]:
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, client_tls, server_hostname="127.0.0.1")
    await stream.do_handshake()
    return stream, local_address(tcp)


async def test_tls_binding(
    nursery: trio.Nursery, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = await start_server(nursery, ssl_context=server_tls)
    tids = [new_transaction_id() for _ in range(3)]
    with trio.fail_after(TIMEOUT):
        stream, local = await open_tls(server.address, client_tls)
        async with stream:
            wire = b"".join(binding_request(tid) for tid in tids)
            await stream.send_all(wire[:30])
            await stream.send_all(wire[30:])
            replies = await read_replies(stream, len(tids))
            assert [reply.transaction_id for reply in replies] == tids
            assert all(reply.get(XorMappedAddress) == XorMappedAddress(*local) for reply in replies)


async def test_a_failed_tls_handshake_closes_only_that_connection(
    nursery: trio.Nursery, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = await start_server(nursery, ssl_context=server_tls)
    with trio.fail_after(TIMEOUT):
        # Plain STUN to the TLS port: not a ClientHello.
        plain = await trio.open_tcp_stream(*server.address)
        async with plain:
            await plain.send_all(binding_request(new_transaction_id()))
            # The server may answer with a TLS alert before closing, but never with STUN.
            leftover = await read_until_closed(plain)
            assert not leftover.startswith(b"\x01\x01")
        # A client that does not trust the server's certificate aborts the handshake.
        untrusting = ssl.create_default_context()
        tcp = await trio.open_tcp_stream(*server.address)
        doubtful = trio.SSLStream(tcp, untrusting, server_hostname="127.0.0.1")
        with pytest.raises(trio.BrokenResourceError):
            await doubtful.do_handshake()
        await trio.aclose_forcefully(doubtful)
        # The listener is still serving TLS.
        stream, local = await open_tls(server.address, client_tls)
        async with stream:
            tid = new_transaction_id()
            await stream.send_all(binding_request(tid))
            (reply,) = await read_replies(stream, 1)
            assert reply.transaction_id == tid
            assert reply.get(XorMappedAddress) == XorMappedAddress(*local)
    assert server.stats.closed_broken >= 1


async def test_a_client_that_never_starts_tls_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, server_tls: ssl.SSLContext
) -> None:
    server = await start_server(nursery, ssl_context=server_tls, idle_timeout=SHORT_IDLE)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            assert await read_until_closed(stream) == b""
    assert server.stats.closed_idle == 1
