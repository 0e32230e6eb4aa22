"""RFC 6062 TCP relaying on a real node (`trelay.node.tcp_relay`), with a raw client.

A control connection allocates a TCP relay; Connect reaches a loopback TCP echo peer,
a ConnectionBind on a second connection splices it, and bytes go both ways. A peer that
connects in gets a ConnectionAttempt to the client (with a permission) or is closed
(without); an unbound peer connection is closed after the configured timeout; 446, 447
and 403; the allocation's end closes its data connections.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.helpers.private_network import private_network
from tests.helpers.stream_end import closed_by_peer
from tests.helpers.turn_client import LocalNode, start_node
from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import PASSWORD, REALM, USERNAME
from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    Attribute,
    ConnectionId,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    Username,
)
from trelay.stun.codes import AddressFamily, MessageClass, Method
from trelay.stun.credentials import long_term_key
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.config import TurnConfig

TIMEOUT = 10.0
SHORT = 1.0  # the configured connection timeout of the timeout tests


class RawClient:
    """STUN over one TCP connection, by hand: requests with the long-term credential
    (answering 401/438 with their NONCE), indications kept, raw bytes after a bind."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.nonce: str | None = None
        self.indications: deque[Message] = deque()
        self.key = long_term_key(USERNAME, REALM, PASSWORD)

    async def _fill(self, size: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.buffer) < size:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.buffer += data

    async def receive(self) -> Message:
        await self._fill(20)
        length = struct.unpack_from("!H", self.buffer, 2)[0]
        await self._fill(20 + length)
        frame = bytes(self.buffer[: 20 + length])
        del self.buffer[: 20 + length]
        return decode_message(frame)

    async def call(self, method: Method, *attributes: Attribute) -> Message:
        for _ in range(3):
            credentials: tuple[Attribute, ...] = ()
            if self.nonce is not None:
                credentials = (Username(USERNAME), Realm(REALM), Nonce(self.nonce))
            request = Message(
                method, MessageClass.REQUEST, os.urandom(12), (*attributes, *credentials)
            )
            data = encode_signed(request, self.key) if credentials else encode_message(request)
            await self.stream.send_all(data)
            reply = await self._reply(request.transaction_id)
            nonce = reply.get(Nonce)
            if error_code(reply) in (401, 438) and nonce is not None and nonce.value != self.nonce:
                self.nonce = nonce.value
                continue
            return reply
        raise AssertionError("challenged again and again")

    async def _reply(self, transaction_id: bytes) -> Message:
        for _ in range(100):
            message = await self.receive()
            if message.message_class is MessageClass.INDICATION:
                self.indications.append(message)
            elif message.transaction_id == transaction_id:
                return message
        raise AssertionError("no answer")

    async def indication(self) -> Message:
        return self.indications.popleft() if self.indications else await self.receive()

    async def receive_bytes(self, size: int) -> bytes:
        """Raw bytes (a data connection): exactly `size` of them."""
        await self._fill(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


@asynccontextmanager
async def connection(address: Address) -> AsyncIterator[RawClient]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
    try:
        yield RawClient(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def allocate_tcp(client: RawClient) -> Address:
    reply = await client.call(Method.ALLOCATE, RequestedTransport(6))
    relayed = reply.get(XorRelayedAddress)
    assert reply.message_class is MessageClass.SUCCESS and relayed is not None, reply
    return relayed.address


async def bind(address: Address, connection_id: int) -> RawClient:
    """A new data connection, bound to `connection_id` (the caller closes it)."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
    data = RawClient(stream)
    reply = await data.call(Method.CONNECTION_BIND, ConnectionId(connection_id))
    assert reply.message_class is MessageClass.SUCCESS, reply
    return data


@asynccontextmanager
async def echo_peer() -> AsyncIterator[tuple[Address, trio.MemoryReceiveChannel[trio.Event]]]:
    """A TCP echo server on loopback; for each connection, an event set when it ends."""
    announce, ended = trio.open_memory_channel[trio.Event](100)

    async def echo(stream: trio.SocketStream) -> None:
        done = trio.Event()
        announce.send_nowait(done)
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")
        )
        bound = listeners[0].socket.getsockname()
        yield (bound[0], bound[1]), ended
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node(**config: object) -> AsyncIterator[LocalNode]:
    values: dict[str, object] = {"realm": REALM, "relay_host": "127.0.0.1"}
    values.update(config)
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery, TurnConfig(**values))  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


async def connected(client: RawClient, peer: Address) -> int:
    reply = await client.call(Method.CONNECT, XorPeerAddress(*peer))
    attribute = reply.get(ConnectionId)
    assert reply.message_class is MessageClass.SUCCESS and attribute is not None, reply
    return attribute.value


async def eof(stream: trio.abc.Stream) -> bool:
    """True once the other side closed (or reset) `stream`, within TIMEOUT."""
    return await closed_by_peer(stream, TIMEOUT)


async def test_connect_bind_and_bytes_both_ways() -> None:
    async with node() as local, echo_peer() as (peer, _), connection(local.tcp) as control:
        await allocate_tcp(control)
        connection_id = await connected(control, peer)
        data = await bind(local.tcp, connection_id)
        try:
            await data.stream.send_all(b"hello through the relay")
            assert await data.receive_bytes(23) == b"hello through the relay"
            # More than one chunk each way, sent while the echo comes back.
            payload = os.urandom(1 << 20)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(data.stream.send_all, payload)
                assert await data.receive_bytes(len(payload)) == payload
        finally:
            await trio.aclose_forcefully(data.stream)
        counters = local.node.counters.by_transport[ClientTransport.TCP]
        assert counters.client_to_peer_bytes == counters.peer_to_client_bytes == 23 + (1 << 20)
        (session,) = local.node.sessions()
        assert session.traffic.client_to_peer_bytes == 23 + (1 << 20)


async def test_a_peer_connecting_in_with_a_permission() -> None:
    async with node() as local, connection(local.tcp) as control:
        relayed = await allocate_tcp(control)
        reply = await control.call(Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 1))
        assert reply.message_class is MessageClass.SUCCESS, reply
        with trio.fail_after(TIMEOUT):
            peer = await trio.open_tcp_stream(*relayed)
        try:
            await peer.send_all(b"before the bind")  # buffered until the splice
            attempt = await control.indication()
            assert attempt.method == Method.CONNECTION_ATTEMPT
            local_address = peer.socket.getsockname()
            assert attempt.get(XorPeerAddress) == XorPeerAddress(*local_address[:2])
            attribute = attempt.get(ConnectionId)
            assert attribute is not None
            data = await bind(local.tcp, attribute.value)
            assert await data.receive_bytes(15) == b"before the bind"
            await data.stream.send_all(b"answer")
            with trio.fail_after(TIMEOUT):
                assert await peer.receive_some(6) == b"answer"
            await trio.aclose_forcefully(data.stream)
            assert await eof(peer)  # §5.5: the data connection closing closes the peer's
        finally:
            await trio.aclose_forcefully(peer)


async def test_a_peer_without_a_permission_is_closed() -> None:
    async with node() as local, connection(local.tcp) as control:
        relayed = await allocate_tcp(control)
        with trio.fail_after(TIMEOUT):
            peer = await trio.open_tcp_stream(*relayed)
        try:
            assert await eof(peer)
        finally:
            await trio.aclose_forcefully(peer)
        assert not control.indications
        assert not local.node.server.tcp.connections


async def test_an_unbound_connection_is_closed_after_the_timeout() -> None:
    async with (
        node(tcp_connection_timeout=SHORT) as local,
        echo_peer() as (peer, ended),
        connection(local.tcp) as control,
    ):
        await allocate_tcp(control)
        connection_id = await connected(control, peer)
        with trio.fail_after(TIMEOUT):
            await (await ended.receive()).wait()  # the relay closed its connection to the peer
        assert connection_id not in local.node.server.tcp.connections
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(*local.tcp)
        late = RawClient(stream)
        try:
            reply = await late.call(Method.CONNECTION_BIND, ConnectionId(connection_id))
            assert error_code(reply) == 400
        finally:
            await trio.aclose_forcefully(stream)


@private_network  # CONNECT to 10.0.0.1: were it not refused, no SYN leaves the machine
async def test_446_447_403() -> None:
    async with node() as local, echo_peer() as (peer, _), connection(local.tcp) as control:
        await allocate_tcp(control)
        await connected(control, peer)
        assert error_code(await control.call(Method.CONNECT, XorPeerAddress(*peer))) == 446
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()
        closed.close()  # nothing listens there: the connect is refused
        assert error_code(await control.call(Method.CONNECT, XorPeerAddress(*refused))) == 447
        assert error_code(await control.call(Method.CONNECT, XorPeerAddress("10.0.0.1", 80))) == 403


async def test_closing_the_control_connection_closes_the_data_connections() -> None:
    async with node() as local, echo_peer() as (peer, ended):
        async with connection(local.tcp) as control:
            await allocate_tcp(control)
            connection_id = await connected(control, peer)
            data = await bind(local.tcp, connection_id)
        try:
            assert await eof(data.stream)  # RFC 6062 §5.5, RFC 8656 §3.1
            with trio.fail_after(TIMEOUT):
                await (await ended.receive()).wait()
        finally:
            await trio.aclose_forcefully(data.stream)
        assert not local.node.server.tcp.connections and not local.node.tcp_relays.peers
        assert not local.node.tcp_relays.listeners


LIMIT = 64 << 20  # more than loopback's socket buffers hold, all of them together
BLOCK = os.urandom(65536)


async def test_a_client_that_does_not_read_stops_the_peer() -> None:
    """Backpressure: the splice reads no more from the peer than it could send on, so a
    peer writing to a client that does not read is soon blocked by TCP itself, long
    before `LIMIT`; then everything it wrote arrives, in order."""
    async with node() as local, connection(local.tcp) as control:
        relayed = await allocate_tcp(control)
        await control.call(Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 1))
        peer = socket.create_connection(relayed, timeout=TIMEOUT)  # loopback: at once
        try:
            attempt = await control.indication()
            attribute = attempt.get(ConnectionId)
            assert attribute is not None
            data = await bind(local.tcp, attribute.value)
            peer.setblocking(False)
            twice = BLOCK * 2
            sent, quiet = 0, 0
            while sent < LIMIT and quiet < 20:  # blocked for 20 tries in a row: it stays so
                start = sent % len(BLOCK)
                try:
                    sent += peer.send(twice[start : start + len(BLOCK)])
                except BlockingIOError:
                    quiet += 1
                    await trio.sleep(0.05)
                else:
                    quiet = 0
                    await trio.lowlevel.checkpoint()
            assert sent < LIMIT
            received = await data.receive_bytes(sent)
            assert received == (BLOCK * (sent // len(BLOCK) + 1))[:sent]
            await trio.aclose_forcefully(data.stream)
        finally:
            peer.close()
        counters = local.node.counters.by_transport[ClientTransport.TCP]
        assert counters.peer_to_client_bytes == sent


async def test_an_ipv6_tcp_allocation() -> None:
    """REQUESTED-ADDRESS-FAMILY IPv6: the listening relay socket and the connections to
    peers are IPv6 (here ::1, a loopback echo peer on ::1)."""

    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    async with (
        node(relay_host_v6="::1") as local,
        trio.open_nursery() as peers,
        connection(local.tcp) as control,
    ):
        listeners = await peers.start(functools.partial(trio.serve_tcp, echo, 0, host="::1"))
        peer = listeners[0].socket.getsockname()[:2]
        reply = await control.call(
            Method.ALLOCATE, RequestedTransport(6), RequestedAddressFamily(AddressFamily.IPV6)
        )
        relayed = reply.get(XorRelayedAddress)
        assert relayed is not None and relayed.host == "::1", reply
        assert relayed.address in local.node.tcp_relays.listeners
        data = await bind(local.tcp, await connected(control, peer))
        await data.stream.send_all(b"over IPv6")
        assert await data.receive_bytes(9) == b"over IPv6"
        await trio.aclose_forcefully(data.stream)
        peers.cancel_scope.cancel()
