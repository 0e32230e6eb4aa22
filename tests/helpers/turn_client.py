"""A small trio TURN client for runtime tests, and the loopback node and peer it talks to.

`TurnClient` is the I/O around the pure client core `trelay.turn.client` (which owns the
protocol: requests, the RFC 8489 §9.2 challenge, signing, matching responses, Data
indications and ChannelData): a UDP socket or TCP connection, timeouts and UDP
retransmission. It speaks as an RFC 5389 client (MD5 key, USERNAME,
MESSAGE-INTEGRITY), as Chrome and aioice do.

Invariants:
- every wait is bounded: each transaction and each receive runs under `trio.fail_after`;
- over UDP a request is retransmitted (same transaction id) every `RETRANSMIT` seconds
  until its timeout; the server's response cache makes that idempotent;
- data that arrives while a request waits for its response is kept, in order, for
  `receive_data`; responses to other transactions (late duplicates) are dropped;
- a response to a signed request must carry a valid MESSAGE-INTEGRITY (design §5),
  except 401 and 438, which the server cannot sign: the core reports any other as
  discarded, and the client fails the test at once instead of waiting for a timeout.

`start_node` runs a real `trelay.node.turn_node.TurnNode` with UDP and TCP listeners in the
caller's nursery (loopback, port 0), so that tests see the node, its counters and the
listeners' stats; `Peer` is a plain UDP socket standing in for a TURN peer.
"""

from __future__ import annotations

import functools
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tests.helpers.turn_relay import PASSWORD, USERNAME, make_turn_server
from trelay.config.settings import ListenSettings, Settings, StreamSettings
from trelay.config.values import ListenAddress
from trelay.node.assembly import start_node as start_node_from
from trelay.node.datagram_batch import MAX_DATAGRAM, UdpListenerStats
from trelay.node.listeners import Listeners
from trelay.node.stream_listener import StreamListenerStats, serve_stream
from trelay.node.turn_node import TurnNode
from trelay.node.udp_listener import serve_udp
from trelay.stun.attributes import Attribute
from trelay.stun.codes import Method
from trelay.stun.message import Message, new_transaction_id
from trelay.turn.addressing import Address
from trelay.turn.client import TurnClientSession
from trelay.turn.client_auth import LongTermCredentials
from trelay.turn.client_events import (
    Allocated,
    ChannelBound,
    ClientEvent,
    DataReceived,
    Discarded,
    DiscardReason,
    OutgoingRequest,
    PermissionCreated,
    Refreshed,
    RequestFailed,
    Retrying,
    TransactionEnded,
)
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

    async def receive(self) -> bytes:
        """The next datagram from the server (others are dropped)."""
        while True:
            data, source = await self.sock.recvfrom(MAX_DATAGRAM)
            if (source[0], source[1]) == self.server:
                return data

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
        self.reliable = True

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("the server closed the connection")
        return bytes(data)

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
        self.timeout = timeout
        self.session = TurnClientSession(
            _credentials(username, password),
            transaction_ids=new_transaction_id,
            stream=transport.reliable,
        )
        # Kept after a deletion (unlike the session's), so tests can aim at the old port.
        self.relayed: Address | None = None
        self._inbox: deque[Received] = deque()
        self._events: deque[ClientEvent] = deque()

    @property
    def local(self) -> Address:
        return self.transport.local()

    # Tests swap credentials on a client: the next challenge is answered with the new ones.
    @property
    def username(self) -> str:
        return self._credentials.username

    @username.setter
    def username(self, username: str) -> None:
        self.session.credentials = _credentials(username, self.password)

    @property
    def password(self) -> str:
        return self._credentials.password

    @password.setter
    def password(self, password: str) -> None:
        self.session.credentials = _credentials(self.username, password)

    @property
    def _credentials(self) -> LongTermCredentials:
        credentials = self.session.credentials
        assert isinstance(credentials, LongTermCredentials)
        return credentials

    @property
    def realm(self) -> str | None:
        return self.session.realm

    @property
    def nonce(self) -> str | None:
        return self.session.nonce

    @property
    def key(self) -> bytes:
        signing = self.session.signing
        assert signing is not None, "no REALM yet: the server has not challenged us"
        return signing.key

    # --- requests (RFC 8489 §6.2, §9.2) --------------------------------------------------

    async def request(self, method: Method, *attributes: Attribute) -> Message:
        """Send a request (signed once we hold a nonce); return the final response.

        A 401 or 438 carrying REALM and NONCE is answered by the core, signed.
        """
        return _response(await self._run(self.session.request(method, attributes)))

    async def checked(self, method: Method, *attributes: Attribute) -> Message:
        """`request`, raising `TurnError` unless the answer is a success."""
        return _response(self._check(await self._run(self.session.request(method, attributes))))

    async def binding(self) -> Message:
        """An unauthenticated Binding request (RFC 8489 §3)."""
        return _response(await self._run(self.session.binding()))

    async def allocate(self, lifetime: int | None = None, *more: Attribute) -> Address:
        """RFC 8656 §7.1: Allocate a UDP relay; returns the relayed transport address."""
        event = self._check(await self._run(self.session.allocate(lifetime=lifetime, extra=more)))
        assert isinstance(event, Allocated), event
        self.relayed = event.relayed
        return event.relayed

    async def refresh(self, lifetime: int | None = None) -> int:
        """RFC 8656 §7.3 (LIFETIME 0 deletes); returns the granted lifetime."""
        event = self._check(await self._run(self.session.refresh(lifetime)))
        assert isinstance(event, Refreshed), event
        return event.lifetime

    async def create_permission(self, *peers: Address) -> None:
        """RFC 8656 §9.1: install (or refresh) permissions for the peers' IPs."""
        event = self._check(await self._run(self.session.create_permission(*peers)))
        assert isinstance(event, PermissionCreated), event

    async def channel_bind(self, channel: int, peer: Address) -> None:
        """RFC 8656 §11.1: bind (or refresh) `channel` to `peer`."""
        event = self._check(await self._run(self.session.channel_bind(channel, peer)))
        assert isinstance(event, ChannelBound), event

    # --- data (RFC 8656 §10, §12) -------------------------------------------------------

    async def send_indication(self, peer: Address, data: bytes, *more: Attribute) -> None:
        await self.transport.send(self.session.send_indication(peer, data, extra=more))

    async def send_channel_data(self, channel: int, data: bytes) -> None:
        await self.transport.send(self.session.channel_data(channel, data))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, from this client's address (for malformed input)."""
        await self.transport.send(data)

    def discard_pending(self) -> int:
        """Over UDP: drop what the server sent that nobody read (e.g. answers to garbage)."""
        assert isinstance(self.transport, _Udp), "a stream cannot skip unread frames"
        self._inbox.clear()
        self._events.clear()
        return self.transport.discard()

    async def receive_data(self) -> Received:
        """The next Data indication or ChannelData, within the timeout."""
        with trio.fail_after(self.timeout):
            while not self._inbox:
                self._keep(await self._next_event())
            return self._inbox.popleft()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- internals --------------------------------------------------------------------

    def _check(self, event: TransactionEnded) -> TransactionEnded:
        if isinstance(event, RequestFailed):
            raise TurnError(event.method, event.code, event.reason)
        return event

    async def _run(self, request: OutgoingRequest) -> TransactionEnded:
        """One request to its end, through any challenge the core answers."""
        while True:
            event = await self._transact(request)
            if not isinstance(event, Retrying):
                return event
            request = event.request

    async def _transact(self, request: OutgoingRequest) -> TransactionEnded | Retrying:
        tid = request.transaction_id
        try:
            with trio.fail_after(self.timeout):
                while True:
                    await self.transport.send(request.data)
                    with trio.move_on_after(
                        RETRANSMIT if not self.transport.reliable else self.timeout
                    ):
                        return await self._outcome(tid)
        finally:
            self.session.cancel(tid)  # a no-op once answered; forgets it on a timeout

    async def _outcome(self, tid: bytes) -> TransactionEnded | Retrying:
        while True:
            event = await self._next_event()
            if isinstance(event, DataReceived):
                self._keep(event)
            elif isinstance(event, Discarded):
                bad = event.reason is DiscardReason.BAD_INTEGRITY
                assert not (bad and event.transaction_id == tid), "unsigned response"
            elif event.transaction_id == tid:
                return event

    async def _next_event(self) -> ClientEvent:
        while not self._events:
            data = await self.transport.receive()
            if self.transport.reliable:
                self._events.extend(self.session.receive_stream(data))
            else:
                self._events.extend(self.session.receive_datagram(data))
        return self._events.popleft()

    def _keep(self, event: ClientEvent) -> None:
        if isinstance(event, DataReceived):
            source = event.peer if event.channel is None else event.channel
            assert source is not None
            self._inbox.append((source, event.data))


def _credentials(username: str, password: str) -> LongTermCredentials:
    # RFC 5389 style: the nonce cookie's SHA-256 offer is left unanswered.
    return LongTermCredentials(username, password, password_algorithms=())


def _response(event: TransactionEnded) -> Message:
    assert event.response is not None
    return event.response


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
    """A node with a UDP and a TCP listener on loopback (user alice/wonderland), started
    by the node assembly with the listeners' counters kept for the test."""
    udp_stats, tcp_stats = UdpListenerStats(), StreamListenerStats()
    loopback = (ListenAddress(LOOPBACK, 0),)
    settings = Settings(
        listen=ListenSettings(udp=loopback, tcp=loopback, tls=()),
        stream=StreamSettings(idle_timeout=idle_timeout),
    )
    listeners = Listeners(
        udp=functools.partial(serve_udp, stats=udp_stats),
        stream=functools.partial(serve_stream, stats=tcp_stats),
    )
    running = await start_node_from(
        nursery, settings, server=make_turn_server(config), listeners=listeners
    )
    (udp,), (tcp,) = running.bound.udp, running.bound.tcp
    return LocalNode(running.node, udp, tcp, udp_stats, tcp_stats)


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
