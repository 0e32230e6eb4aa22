"""A hypothesis-driven fuzzer of a real node over real sockets (issue 15, Deliver 5).

One `trelay serve` process (tests.reliability.node_process) per module, attacked over
UDP, TCP and TLS with batches of `tests.reliability.fuzz_inputs` frames: mutated valid
messages of every method (signed with a real nonce, so they reach past authentication,
and corrupted after signing), ChannelData with lying lengths and unbound channels, and
random bytes; the streams are cut at random points, may end in a frame whose length field
promises bytes that never come, and are closed gracefully or reset. TLS also gets
plaintext garbage where a handshake should be.

After every example the node must still serve: a Binding is answered and an authenticated
Allocate succeeds (UDP, and a Binding over the fuzzed stream transport on a fresh
connection), the process is alive, and its log holds no traceback and no ERROR line.

Each example comes from a source address of its own (127.2.x.y): the per-source limit on
unauthenticated requests (design §6) is not what this test measures, and the checks come
from another range (127.3.x.y) so that the fuzzer's sources cannot starve them. Every
wait is bounded (socket timeouts; examples are bounded by `max_examples`). Each test runs
with its node in a private network namespace (`tests.helpers.private_network`): the
fuzzed address attributes name denied peers (private addresses among them), and a
permission wrongly granted there cannot send anything off the machine.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.private_network import private_network
from tests.reliability import fuzz_inputs
from tests.reliability.fuzz_inputs import Frame, batches, stream_bytes
from tests.reliability.node_process import (
    PASSWORD,
    TIMEOUT,
    USER,
    Address,
    Node,
    allocate,
    binding,
    challenge,
    client_tls_context,
    running_node,
    udp_socket,
)
from trelay.stun.attributes import Attribute, Nonce, Realm, RequestedTransport, Username
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import long_term_key
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

_fuzz_sources = itertools.count()
_check_sources = itertools.count()
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _source(prefix: str, counter: Iterator[int]) -> str:
    n = next(counter) % 62_500
    return f"{prefix}.{n // 250}.{1 + n % 250}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(Path(tmp_path_factory.mktemp("fuzz"))) as running:
        yield running


@pytest.fixture(scope="module")
def sink(node: Node) -> Iterator[socket.socket]:
    """The peer a won permission may relay to; its port and the node's own are the only
    ports a fuzzed peer address names (the node must refuse its own)."""
    with udp_socket() as sock:
        sock.setblocking(False)
        fuzz_inputs.peer_ports[:] = [sock.getsockname()[1], node.udp[1], node.tcp[1], node.tls[1]]
        yield sock


def _drain(sock: socket.socket) -> None:
    for _ in range(100_000):
        try:
            sock.recv(65536)
        except BlockingIOError:
            return


def still_serving(node: Node, sink: socket.socket, stream: Address | None = None) -> None:
    _drain(sink)
    assert node.alive(), node.log.read_text(errors="replace")[-3000:]
    binding(node.udp, _source("127.3", _check_sources))
    allocate(node.udp, _source("127.3", _check_sources))
    if stream is not None:
        tls = stream == node.tls
        with _connect(stream, _source("127.3", _check_sources), tls) as conn:
            request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id(), ())
            conn.sendall(encode_message(request))
            reply = decode_message(_read_frame(conn))
            assert reply.message_class is MessageClass.SUCCESS, reply
    assert node.log_problems() == []


# --- streams ------------------------------------------------------------------------------


def _connect(server: Address, source: str, tls: bool) -> socket.socket:
    raw = socket.create_connection(server, timeout=TIMEOUT, source_address=(source, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not tls:
        return raw
    return client_tls_context().wrap_socket(raw, server_hostname="localhost")


def _read_frame(conn: socket.socket) -> bytes:
    """One STUN message from a stream (bounded: the socket has a timeout)."""
    data = b""
    for _ in range(10_000):
        if len(data) >= 20 and len(data) >= 20 + struct.unpack("!H", data[2:4])[0]:
            return data[: 20 + struct.unpack("!H", data[2:4])[0]]
        chunk = conn.recv(65536)
        assert chunk, "the node closed the connection"
        data += chunk
    raise AssertionError("no frame")


def _stream_challenge(conn: socket.socket) -> tuple[tuple[Attribute, ...], bytes]:
    first = Message(
        Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), (RequestedTransport(6),)
    )
    conn.sendall(encode_message(first))
    reply = decode_message(_read_frame(conn))
    nonce, realm = reply.get(Nonce), reply.get(Realm)
    assert nonce is not None and realm is not None, reply
    return (Username(USER), Realm(realm.value), Nonce(nonce.value)), long_term_key(
        USER, realm.value, PASSWORD
    )


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _send_stream(
    conn: socket.socket, frames: list[Frame], cuts: list[int], tail: int | None
) -> None:
    auth, key = _stream_challenge(conn)
    data = stream_bytes([frame.encode(auth, key) for frame in frames], tail)
    try:
        for piece in _pieces(data, cuts):
            conn.sendall(piece)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the node closed a stream it could not frame: allowed (RFC 8656 §12.5)


def _close(conn: socket.socket, reset: bool) -> None:
    if reset:  # SO_LINGER 0: the close sends RST instead of FIN
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


_stream_cases = given(
    frames=batches(),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
    tail=st.none() | st.integers(0x40, 0xFFFF),
    reset=st.booleans(),
)


# --- the tests -----------------------------------------------------------------------------


@private_network
@FUZZ
@given(frames=batches())
def test_udp(node: Node, sink: socket.socket, frames: list[Frame]) -> None:
    with udp_socket(_source("127.2", _fuzz_sources)) as sock:
        auth, key = challenge(sock, node.udp)
        for frame in frames:
            sock.sendto(frame.encode(auth, key), node.udp)
    still_serving(node, sink)


def _fuzz_stream(
    node: Node,
    sink: socket.socket,
    *,
    tls: bool,
    frames: list[Frame],
    cuts: list[int],
    tail: int | None,
    reset: bool,
) -> None:
    """One example over a fresh TCP or TLS connection, then the node still serves."""
    port = node.tls if tls else node.tcp
    conn = _connect(port, _source("127.2", _fuzz_sources), tls=tls)
    try:
        _send_stream(conn, frames, cuts, tail)
    finally:
        _close(conn, reset)
    still_serving(node, sink, port)


@private_network
@FUZZ
@_stream_cases
def test_tcp(
    node: Node,
    sink: socket.socket,
    frames: list[Frame],
    cuts: list[int],
    tail: int | None,
    reset: bool,
) -> None:
    _fuzz_stream(node, sink, tls=False, frames=frames, cuts=cuts, tail=tail, reset=reset)


@private_network
@settings(FUZZ, max_examples=100)
@_stream_cases
def test_tls(
    node: Node,
    sink: socket.socket,
    frames: list[Frame],
    cuts: list[int],
    tail: int | None,
    reset: bool,
) -> None:
    _fuzz_stream(node, sink, tls=True, frames=frames, cuts=cuts, tail=tail, reset=reset)


@private_network
@settings(FUZZ, max_examples=50)
@given(garbage=st.binary(min_size=1, max_size=2000), reset=st.booleans())
def test_tls_port_plaintext(node: Node, sink: socket.socket, garbage: bytes, reset: bool) -> None:
    """Bytes that are not a TLS handshake (STUN, ChannelData, noise) on the TLS port."""
    conn = _connect(node.tls, _source("127.2", _fuzz_sources), tls=False)
    try:
        conn.sendall(garbage)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        _close(conn, reset)
    still_serving(node, sink, node.tls)
