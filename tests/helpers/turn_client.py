"""A small trio TURN client for runtime tests, and the loopback node and peer it talks to.

Owns the client side of RFC 8656 as the runtime tests need it, built on our own `stun`
codec: Allocate with the long-term credential mechanism (RFC 8489 §9.2: an unsigned
request, 401 with REALM and NONCE, the same request signed; 438 retried with the new
nonce), Refresh (§7), CreatePermission (§9), ChannelBind (§11), Send indications (§10.1)
and ChannelData (§12.4, padded over TCP §12.5) towards peers, and Data indications and
ChannelData from them.

Invariants:
- every wait is bounded: each request and each receive runs under `trio.fail_after`;
- over UDP a request is retransmitted (same transaction id) every `RETRANSMIT` seconds
  until its timeout; the server's response cache makes that idempotent;
- frames that arrive while a request waits for its response are kept, in order, for
  `receive_data`; responses to other transactions (late duplicates) are dropped;
- a response to a signed request must carry a valid MESSAGE-INTEGRITY (design §5),
  except 401 and 438, which the server cannot sign.

`start_node` runs a real `trelay.node.turn_node.TurnNode` with UDP and TCP listeners in the
caller's nursery (loopback, port 0), so that tests see the node, its counters and the
listeners' stats; `Peer` is a plain UDP socket standing in for a TURN peer.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tests.helpers.turn_relay import PASSWORD, USERNAME, make_turn_server
from trelay.node.datagram_batch import MAX_DATAGRAM, UdpListenerStats
from trelay.node.stream_listener import StreamListenerStats, serve_stream
from trelay.node.turn_node import TurnNode
from trelay.node.udp_listener import serve_udp
from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from trelay.stun.channel_data import decode_channel_data, encode_channel_data
from trelay.stun.codes import ErrorCode, MessageClass, Method, TransportProtocol
from trelay.stun.credentials import long_term_key
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.framing import Frame, StreamDeframer
from trelay.stun.integrity import encode_signed, verify_integrity
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig

TIMEOUT = 10.0
RETRANSMIT = 0.5
LOOPBACK = "127.0.0.1"
# What `receive_data` returns: the peer (Data indication) or channel (ChannelData), and data.
Received = tuple[Address | int, bytes]


class TurnError(Exception):
    """An error response; `code` is its ERROR-CODE."""

    def __init__(self, method: int, code: int, reason: str) -> None:
        super().__init__(f"method 0x{method:03x}: {code} {reason}")
        self.code = code


# --- transports ---------------------------------------------------------------------------


class _Udp:
    def __init__(self, raw: socket.socket, server: Address) -> None:
        self.raw = raw  # the same socket, for non-blocking reads in `discard`
        self.sock = trio.socket.from_stdlib_socket(raw)
        self.server = server
        self.reliable = False

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, self.server)

    async def receive(self) -> list[Frame]:
        while True:
            data, source = await self.sock.recvfrom(MAX_DATAGRAM)
            if (source[0], source[1]) != self.server:
                continue
            if data and 0x40 <= data[0] <= 0x7F:  # ChannelData (RFC 7983, RFC 5766)
                return [Frame(*decode_channel_data(data))]
            return [Frame(None, data)]

    def local(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def discard(self) -> int:
        """Drop every datagram already queued; returns how many."""
        for count in range(1 << 20):
            try:
                self.raw.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return count
        raise AssertionError("the queue never emptied")

    async def aclose(self) -> None:
        self.sock.close()


class _Tcp:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.deframer = StreamDeframer()
        self.reliable = True

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> list[Frame]:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("the server closed the connection")
            frames = self.deframer.feed(bytes(data))
            if frames:
                return frames

    def local(self) -> Address:
        host, port = self.stream.socket.getsockname()[:2]
        return host, port

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


# --- the client ---------------------------------------------------------------------------


class TurnClient:
    """One client 5-tuple: a UDP socket or a TCP connection to the server."""

    def __init__(
        self,
        transport: _Udp | _Tcp,
        username: str = USERNAME,
        password: str = PASSWORD,
        timeout: float = TIMEOUT,
    ) -> None:
        self.transport = transport
        self.username = username
        self.password = password
        self.timeout = timeout
        self.realm: str | None = None
        self.nonce: str | None = None
        self.relayed: Address | None = None
        self._inbox: deque[Received] = deque()

    @property
    def local(self) -> Address:
        return self.transport.local()

    @property
    def key(self) -> bytes:
        assert self.realm is not None, "no REALM yet: the server has not challenged us"
        return long_term_key(self.username, self.realm, self.password)

    # --- requests (RFC 8489 §6.2, §9.2) --------------------------------------------------

    async def request(self, method: Method, *attributes: Attribute) -> Message:
        """Send a request (signed once we hold a nonce); return the final response.

        A 401 or 438 carrying REALM and NONCE is retried once, signed with them.
        """
        response = await self._transact(method, attributes)
        if response.message_class is MessageClass.ERROR:
            code = _error_code(response)
            nonce, realm = response.get(Nonce), response.get(Realm)
            if code in (ErrorCode.UNAUTHORIZED, ErrorCode.STALE_NONCE) and nonce and realm:
                self.realm, self.nonce = realm.value, nonce.value
                response = await self._transact(method, attributes)
        return response

    async def checked(self, method: Method, *attributes: Attribute) -> Message:
        """`request`, raising `TurnError` unless the answer is a success."""
        response = await self.request(method, *attributes)
        if response.message_class is not MessageClass.SUCCESS:
            error = response.get(ErrorCodeAttribute)
            code, reason = (0, "no ERROR-CODE") if error is None else (error.code, error.reason)
            raise TurnError(method, code, reason)
        return response

    async def binding(self) -> Message:
        """An unauthenticated Binding request (RFC 8489 §3)."""
        return await self._transact(Method.BINDING, (), sign=False)

    async def allocate(self, lifetime: int | None = None, *more: Attribute) -> Address:
        """RFC 8656 §7.1: Allocate a UDP relay; returns the relayed transport address."""
        extra = (*(() if lifetime is None else (Lifetime(lifetime),)), *more)
        response = await self.checked(
            Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), *extra
        )
        relayed = response.get(XorRelayedAddress)
        assert relayed is not None, "Allocate success without XOR-RELAYED-ADDRESS"
        self.relayed = relayed.address
        return relayed.address

    async def refresh(self, lifetime: int | None = None) -> int:
        """RFC 8656 §7.3 (LIFETIME 0 deletes); returns the granted lifetime."""
        extra = () if lifetime is None else (Lifetime(lifetime),)
        response = await self.checked(Method.REFRESH, *extra)
        granted = response.get(Lifetime)
        assert granted is not None, "Refresh success without LIFETIME"
        return granted.value

    async def create_permission(self, *peers: Address) -> None:
        """RFC 8656 §9.1: install (or refresh) permissions for the peers' IPs."""
        await self.checked(Method.CREATE_PERMISSION, *(XorPeerAddress(*peer) for peer in peers))

    async def channel_bind(self, channel: int, peer: Address) -> None:
        """RFC 8656 §11.1: bind (or refresh) `channel` to `peer`."""
        await self.checked(Method.CHANNEL_BIND, ChannelNumber(channel), XorPeerAddress(*peer))

    # --- data (RFC 8656 §10, §12) -------------------------------------------------------

    async def send_indication(self, peer: Address, data: bytes, *more: Attribute) -> None:
        indication = Message(
            Method.SEND,
            MessageClass.INDICATION,
            new_transaction_id(),
            (XorPeerAddress(*peer), Data(data), *more),
        )
        await self.transport.send(encode_message(indication))

    async def send_channel_data(self, channel: int, data: bytes) -> None:
        await self.transport.send(encode_channel_data(channel, data, pad=self.transport.reliable))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, from this client's address (for malformed input)."""
        await self.transport.send(data)

    def discard_pending(self) -> int:
        """Over UDP: drop what the server sent that nobody read (e.g. answers to garbage)."""
        assert isinstance(self.transport, _Udp), "a stream cannot skip unread frames"
        self._inbox.clear()
        return self.transport.discard()

    async def receive_data(self) -> Received:
        """The next Data indication or ChannelData, within the timeout."""
        with trio.fail_after(self.timeout):
            while not self._inbox:
                for frame in await self.transport.receive():
                    self._keep(frame)
            return self._inbox.popleft()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- internals --------------------------------------------------------------------

    def _encode(self, message: Message, sign: bool) -> bytes:
        if not sign:
            return encode_message(message)
        assert self.realm is not None and self.nonce is not None
        credentials = (Username(self.username), Realm(self.realm), Nonce(self.nonce))
        return encode_signed(message.with_attributes(*credentials), self.key)

    async def _transact(
        self, method: Method, attributes: tuple[Attribute, ...], sign: bool | None = None
    ) -> Message:
        signed = self.nonce is not None if sign is None else sign
        transaction_id = new_transaction_id()
        wire = self._encode(
            Message(method, MessageClass.REQUEST, transaction_id, attributes), signed
        )
        with trio.fail_after(self.timeout):
            while True:
                await self.transport.send(wire)
                with trio.move_on_after(
                    RETRANSMIT if not self.transport.reliable else self.timeout
                ):
                    raw = await self._response(transaction_id)
                    break
        response = decode_message(raw)
        code = _error_code(response) if response.message_class is MessageClass.ERROR else None
        if signed and code not in (ErrorCode.UNAUTHORIZED, ErrorCode.STALE_NONCE):
            assert verify_integrity(raw, self.key), f"unsigned response to a signed {method!r}"
        return response

    async def _response(self, transaction_id: bytes) -> bytes:
        while True:
            for frame in await self.transport.receive():
                # C1 (bit 8 of the type) set: a success or error response (RFC 8489 §5).
                if (
                    frame.channel is None
                    and frame.data[8:20] == transaction_id
                    and frame.data[0] & 1
                ):
                    return frame.data
                self._keep(frame)

    def _keep(self, frame: Frame) -> None:
        if frame.channel is not None:
            self._inbox.append((frame.channel, frame.data))
            return
        message = decode_message(frame.data)
        if message.method == Method.DATA and message.message_class is MessageClass.INDICATION:
            peer, data = message.get(XorPeerAddress), message.get(Data)
            assert peer is not None and data is not None, "Data indication without its parts"
            self._inbox.append((peer.address, data.value))


def _error_code(response: Message) -> int | None:
    error = response.get(ErrorCodeAttribute)
    return None if error is None else error.code


@asynccontextmanager
async def udp_client(
    server: Address, host: str = LOOPBACK, time_limit: float = TIMEOUT
) -> AsyncIterator[TurnClient]:
    """A TURN client on a fresh UDP socket bound to (host, 0)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.setblocking(False)
    raw.bind((host, 0))
    client = TurnClient(_Udp(raw, server), timeout=time_limit)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def tcp_client(
    server: Address, *, receive_buffer: int | None = None, time_limit: float = TIMEOUT
) -> AsyncIterator[TurnClient]:
    """A TURN client on a fresh TCP connection; `receive_buffer` sets SO_RCVBUF first."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Before connect, so the advertised window (and its scale) follow it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    with trio.fail_after(time_limit):
        await sock.connect(server)
    client = TurnClient(_Tcp(trio.SocketStream(sock)), timeout=time_limit)
    try:
        yield client
    finally:
        await client.aclose()


# --- the node and a peer ------------------------------------------------------------------


@dataclass
class LocalNode:
    node: TurnNode
    udp: Address
    tcp: Address
    udp_stats: UdpListenerStats
    tcp_stats: StreamListenerStats


async def start_node(
    nursery: trio.Nursery, config: TurnConfig | None = None, *, idle_timeout: float = 30.0
) -> LocalNode:
    """A TurnNode with a UDP and a TCP listener on loopback (user alice/wonderland)."""
    node = TurnNode(make_turn_server(config), nursery)
    udp_stats, tcp_stats = UdpListenerStats(), StreamListenerStats()

    async def udp(task_status: trio.TaskStatus[Address]) -> None:
        await serve_udp(LOOPBACK, 0, node, stats=udp_stats, task_status=task_status)

    async def tcp(task_status: trio.TaskStatus[Address]) -> None:
        await serve_stream(
            LOOPBACK, 0, node, idle_timeout=idle_timeout, stats=tcp_stats, task_status=task_status
        )

    await nursery.start(node.run_timers)
    return LocalNode(node, await nursery.start(udp), await nursery.start(tcp), udp_stats, tcp_stats)


class Peer:
    """A TURN peer: a UDP socket on loopback."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    async def send(self, to: Address, data: bytes) -> None:
        await self.sock.sendto(data, to)

    async def receive(self, time_limit: float = TIMEOUT) -> tuple[bytes, Address]:
        with trio.fail_after(time_limit):
            data, source = await self.sock.recvfrom(MAX_DATAGRAM)
        return data, (source[0], source[1])


@asynccontextmanager
async def peer(host: str = LOOPBACK) -> AsyncIterator[Peer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    with sock:
        yield Peer(sock)


def port_is_free(address: Address) -> bool:
    """True if a UDP socket can bind `address` now, i.e. nobody holds it."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(address)
    except OSError:
        return False
    finally:
        probe.close()
    return True
