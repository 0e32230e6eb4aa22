"""Hostile input against a real TurnNode: floods of malformed datagrams and TCP streams.

Real sockets on loopback and the autojump MockClock, so idle timeouts (trio time) pass at
once. What must hold: after thousands of random and almost-valid datagrams the
node still answers Binding and a fresh client can allocate; the core keeps no state for
the garbage sources (allocations, client tables, the response cache, the rate limiter
stay as they were or bounded); the drop counters moved. Broken TCP streams are closed
for bad framing or dropped after the idle timeout when they stall, while other clients
are served; and a client that stops reading while its allocation receives peer data is
dropped by the writer's send timeout, its allocation ended (relay/node/stream_listener.py
`_write`: `fail_after(idle_timeout)` around `send_all`).
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.lowlevel
import trio.testing

from tests.helpers.turn_client import (
    LocalNode,
    peer,
    port_is_free,
    start_node,
    tcp_client,
    udp_client,
)
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    Lifetime,
    MessageIntegrity,
    Nonce,
    Realm,
    RequestedTransport,
    UnknownAttribute,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.stats import Drop

GARBAGE_DATAGRAMS = 3000
GARBAGE_SOURCES = 16
SEND_BATCH = 16  # datagrams sent between checkpoints, well under the listener's batch
STREAM_WAIT = 120.0  # mock seconds; more than the listener's 30 s idle timeout
CHANNEL = 0x4002
COOKIE = b"\x21\x12\xa4\x42"

# --- garbage ------------------------------------------------------------------------------


def _header(method: int, message_class: int, length: int, rng: random.Random) -> bytes:
    message_type = (
        (method & 0x000F)
        | (method & 0x0070) << 1
        | (method & 0x0F80) << 2
        | (message_class & 1) << 4
        | (message_class & 2) << 7
    )
    return struct.pack("!HH", message_type, length) + COOKIE + rng.randbytes(12)


def _request(rng: random.Random, *attributes: Attribute) -> Message:
    method = rng.choice(list(Method))
    return Message(method, MessageClass.REQUEST, rng.randbytes(12), attributes)


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 300))


def truncated_header(rng: random.Random) -> bytes:
    return _header(Method.BINDING, MessageClass.REQUEST, 0, rng)[: rng.randint(1, 19)]


def wrong_cookie(rng: random.Random) -> bytes:
    data = bytearray(encode_message(_request(rng, Lifetime(600))))
    data[4 + rng.randrange(4)] ^= 1 << rng.randrange(8)
    return bytes(data)


def lying_length(rng: random.Random) -> bytes:
    body = encode_message(_request(rng, RequestedTransport(17), Lifetime(600)))[20:]
    claimed = rng.choice([len(body) + 4, len(body) - 4, len(body) + 1, 0xFFFC, 1000, 2])
    return _header(rng.choice(list(Method)), MessageClass.REQUEST, claimed, rng) + body


def bad_attribute(rng: random.Random) -> bytes:
    """A well-framed header whose attributes overrun, have wrong sizes or are unknown."""
    kind = rng.choice([0x000D, 0x0012, 0x000C, 0x0019, 0x0008, 0x8028, 0x7FFF, 0x0006])
    value = rng.randbytes(rng.choice([0, 1, 3, 5, 7, 21, 64]))
    tlv = struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
    if rng.random() < 0.3:  # a length field past the end of the message
        tlv = struct.pack("!HH", kind, 400) + value + bytes(-len(value) % 4)
    return _header(rng.choice(list(Method)), MessageClass.REQUEST, len(tlv), rng) + tlv


def fake_credentials(rng: random.Random) -> bytes:
    """Signed-looking TURN requests: made-up nonce, wrong key, or integrity of garbage."""
    method = rng.choice([Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION])
    attributes = (
        RequestedTransport(17),
        Lifetime(rng.choice([0, 600, 0xFFFFFFFF])),
        XorPeerAddress("127.0.0.1", rng.randint(1, 65535)),
        Username(rng.choice(["alice", "mallory", "x" * 600])),
        Realm(rng.choice(["interop.test", "evil"])),
        Nonce(rng.choice(["00000000" + "A" * 22, "ffffffff" + "B" * 22, "zz"])),
    )
    message = Message(method, MessageClass.REQUEST, rng.randbytes(12), attributes)
    if rng.random() < 0.5:
        return encode_signed(message, rng.randbytes(16))
    return encode_message(message.with_attributes(MessageIntegrity(rng.randbytes(20))))


def other_classes(rng: random.Random) -> bytes:
    """Responses, indications (Send to nowhere) and unknown methods: never answered."""
    message_class = rng.choice([MessageClass.INDICATION, MessageClass.SUCCESS, MessageClass.ERROR])
    method = rng.choice([Method.SEND, Method.DATA, Method.ALLOCATE, 0x0FFF, 0x0123])
    attributes = (XorPeerAddress("127.0.0.1", 9), UnknownAttribute(0x7FF0, rng.randbytes(8)))
    return encode_message(Message(method, message_class, rng.randbytes(12), attributes))


def channel_data(rng: random.Random) -> bytes:
    """ChannelData: unbound channels, cut headers, and lengths that lie (up to 0xFFFF).

    The one bound channel (the victim's) only ever comes with a length longer than the
    data, so nothing here is a valid packet to relay.
    """
    data = rng.randbytes(rng.randint(0, 100))
    if rng.random() < 0.25:
        header = struct.pack("!HH", CHANNEL, rng.randint(len(data) + 1, 0xFFFF))
        return header if rng.random() < 0.2 else header + data
    channel = rng.choice([0x4000, 0x4FFF, CHANNEL + 1, 0x4ABC])
    length = rng.choice([len(data), len(data) + 1, 0xFFFF, 0])
    header = struct.pack("!HH", channel, length)
    return header[: rng.randint(1, 3)] if rng.random() < 0.2 else header + data


GENERATORS: tuple[Callable[[random.Random], bytes], ...] = (
    random_bytes,
    truncated_header,
    wrong_cookie,
    lying_length,
    bad_attribute,
    fake_credentials,
    other_classes,
    channel_data,
)


def garbage(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    # An empty datagram has its own test below; here every datagram has a first byte.
    return [payload for payload in (rng.choice(GENERATORS)(rng) for _ in range(count)) if payload]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery)
        nursery.cancel_scope.cancel()


def core_sizes(local: LocalNode) -> dict[str, int]:
    server = local.node.server
    return {
        "allocations": server.allocation_count,
        "udp clients": len(server.client_table(ClientTransport.UDP, local.udp)),
        "tcp clients": len(server.client_table(ClientTransport.TCP, local.tcp)),
        "relayed": len(server.by_relayed),
        "responses": len(server.responses),
        "streams": len(local.node.streams),
    }


async def still_serving(local: LocalNode) -> None:
    """A Binding over UDP and TCP is answered and a fresh client allocates and relays."""
    async with udp_client(local.udp) as fresh, tcp_client(local.tcp) as fresh_tcp:
        for client in (fresh, fresh_tcp):
            reply = await client.binding()
            assert reply.message_class is MessageClass.SUCCESS
        async with peer() as other:
            relayed = await fresh.allocate()
            await fresh.create_permission(other.address)
            await other.send(relayed, b"hello fresh client")
            assert await fresh.receive_data() == (other.address, b"hello fresh client")
            await fresh.refresh(0)


# --- UDP ----------------------------------------------------------------------------------


async def test_a_flood_of_garbage_datagrams_leaves_no_state(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    counters, stats = local.node.counters, local.udp_stats
    async with udp_client(local.udp) as victim, peer() as other:
        # One real allocation with a channel: garbage from its own address must not hurt it.
        relayed = await victim.allocate()
        await victim.channel_bind(CHANNEL, other.address)
        before = core_sizes(local)
        received, replies = stats.datagrams_received, stats.replies_sent
        payloads = garbage(seed=3, count=GARBAGE_DATAGRAMS)
        sockets = [trio.socket.socket(type=trio.socket.SOCK_DGRAM) for _ in range(GARBAGE_SOURCES)]
        for sock in sockets:
            await sock.bind(("127.0.0.1", 0))
        try:
            for index, payload in enumerate(payloads):
                if index % 4 == 0:
                    await victim.send_raw(payload)
                else:
                    await sockets[index % GARBAGE_SOURCES].sendto(payload, local.udp)
                if index % SEND_BATCH == 0:
                    await trio.lowlevel.checkpoint()
            await trio.sleep(1)  # mock time: lets the listener drain what is queued
        finally:
            for sock in sockets:
                sock.close()
        assert stats.datagrams_received == received + len(payloads)
        # No state for the garbage: nothing allocated, cached or bound anywhere.
        assert core_sizes(local) == before
        # The limits hold a bucket per source socket, and one for the destination IP.
        assert len(local.node.server.limits.per_source) <= GARBAGE_SOURCES + 1
        assert len(local.node.server.limits.per_destination) <= 1  # all is 127.0.0.1
        # The drop counters moved, per reason.
        assert counters.dropped[Drop.NO_ALLOCATION] > 0  # ChannelData from sources without one
        assert counters.dropped[Drop.NO_CHANNEL] > 0  # ChannelData for unbound channels
        assert counters.dropped[Drop.MALFORMED] > 0  # the victim's: cut, or shorter than its length
        assert counters.client_to_peer_datagrams == 0
        # Garbage that deserved an answer got one (400, 401 within the rate limit, Binding).
        assert stats.replies_sent > replies
        # The victim's allocation and channel still work both ways (once the answers to
        # its garbage, which filled its receive buffer, are out of the way).
        victim.discard_pending()
        await victim.send_channel_data(CHANNEL, b"after the flood")
        assert (await other.receive())[0] == b"after the flood"
        await other.send(relayed, b"reply")
        assert await victim.receive_data() == (CHANNEL, b"reply")
    # Past the rate limiter's refill time (mock seconds), a fresh client gets in.
    await trio.sleep(5)
    await still_serving(local)
    # The fresh client deleted its allocation; only the victim's is left.
    assert local.node.server.allocation_count == before["allocations"] == 1


async def test_an_empty_datagram_does_not_stop_the_node(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client:
        await client.send_raw(b"")
        await trio.sleep(1)
        reply = await client.binding()
        assert reply.message_class is MessageClass.SUCCESS
    assert local.udp_stats.datagrams_received == 2


# --- TCP ----------------------------------------------------------------------------------


def stun_header(length: int, cookie: bytes = COOKIE) -> bytes:
    return struct.pack("!HH", 0x0001, length) + cookie + bytes(12)


# Streams that stall: the deframer waits for bytes that never come (idle timeout).
STALLING = {
    "STUN length says 1000, 10 bytes sent": stun_header(1000) + bytes(10),
    "STUN length 0xFFFC": stun_header(0xFFFC) + bytes(200),
    "half a header": stun_header(0)[:10],
    "nothing at all": b"",
}
# Streams that are not STUN framing: closed at once (bad framing). ChannelData on a
# channel the connection has not bound is lost framing (tests/node/test_stream_lost_framing.py),
# closed on its header without waiting for the data it claims.
MALFORMED = {
    "TLS ClientHello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    "no magic cookie": stun_header(8, cookie=b"\x00\x00\x00\x00") + bytes(8),
    "unaligned STUN length": stun_header(1001) + bytes(20),
    "0xFF bytes": b"\xff" * 64,
    "a good request, then junk": stun_header(0) + b"\x80junk",
    "ChannelData claiming 64 KiB": struct.pack("!HH", 0x4000, 0xFFFF) + bytes(100),
    # "PO" is a channel number (0x40-0x7F start ChannelData), "ST" a length of 21332.
    "HTTP": b"POST / HTTP/1.1\r\n\r\n",
}
# Streams cut short by the client (truncation, then close).
TRUNCATED = {
    "half a message": stun_header(8)[:20] + bytes(4),
    "half a ChannelData": struct.pack("!HH", 0x4000, 100) + bytes(50),
}


async def bad_stream(
    local: LocalNode, data: bytes, close: bool, sent: trio.Semaphore, closed_at: list[float]
) -> None:
    """Send `data` (then EOF if `close`); wait until the server closes the connection."""
    with trio.fail_after(STREAM_WAIT):
        stream = await trio.open_tcp_stream(*local.tcp)
        async with stream:
            if data:
                await stream.send_all(data)
            if close:
                await stream.send_eof()
            sent.release()
            while True:
                try:
                    received = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not received:
                    break
    closed_at.append(trio.current_time())


async def test_broken_streams_are_closed_or_timed_out_while_others_are_served(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(5)
    # Random streams too: each ends up malformed, stalled or (rarely) answered and idle.
    randoms = [rng.randbytes(rng.randint(1, 200)) for _ in range(20)]
    cases = (
        [(data, False, "stall") for data in STALLING.values()] * 3
        + [(data, False, "malformed") for data in MALFORMED.values()] * 3
        + [(data, True, "truncated") for data in TRUNCATED.values()] * 3
        + [(data, False, "random") for data in randoms]
    )
    before = core_sizes(local)
    stats = local.tcp_stats
    sent = trio.Semaphore(0)
    closed: dict[str, list[float]] = {"stall": [], "malformed": [], "truncated": [], "random": []}
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for data, close, kind in cases:
            nursery.start_soon(bad_stream, local, data, close, sent, closed[kind])
        for _ in cases:
            await sent.acquire()
        # Every bad connection is open or closing; the stalled ones are still held.
        assert stats.closed_idle == 0
        await still_serving(local)
        assert stats.closed_idle == 0
        assert trio.current_time() < start + 30
    stalled, malformed = len(STALLING) * 3, len(MALFORMED) * 3
    assert len(closed["stall"]) == stalled
    assert min(closed["stall"]) >= start + 30  # the listener's idle timeout
    assert max(closed["malformed"] + closed["truncated"]) < start + 30
    assert stats.closed_malformed + stats.closed_lost_framing >= malformed
    assert stats.closed_idle >= stalled
    assert stats.closed_idle + stats.closed_malformed <= len(cases) - len(TRUNCATED) * 3
    assert stats.connections_accepted == stats.connections_closed == len(cases) + 1
    # Once the fresh client's cached responses have expired (40 s), the core is as before.
    await trio.sleep(41)
    assert core_sizes(local) == before
    assert local.node.streams == {}


FLOOD = 8000  # datagrams of 1200 bytes: far more than the kernel buffers of one connection


async def test_a_client_that_stops_reading_is_dropped_and_its_allocation_ends(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with tcp_client(local.tcp, receive_buffer=4096) as client, peer() as other:
        relayed = await client.allocate()
        await client.channel_bind(CHANNEL, other.address)
        five_tuple = FiveTuple(ClientTransport.TCP, client.local, local.tcp)
        connection = local.node.streams[five_tuple]
        # From here on the client reads nothing, while its peer keeps sending.
        for index in range(FLOOD):
            await other.send(relayed, bytes(1200))
            if index % SEND_BATCH == 0:
                await trio.lowlevel.checkpoint()
        flood_end = trio.current_time()
        assert local.node.server.allocation_count == 1  # an allocation keeps quiet TCP open
        assert connection.dropped > 0  # the outbox filled up: data lost, not memory
        with trio.fail_after(STREAM_WAIT):
            # Polling the node (mock seconds): reading would un-stall the client.
            while local.node.server.allocation_count:  # noqa: ASYNC110
                await trio.sleep(1)
        # relay/node/stream_listener.py `_write`: the stalled send_all timed out.
        assert trio.current_time() >= flood_end + 30
        assert local.tcp_stats.closed_idle == 1
        assert local.tcp_stats.connections_closed == 1
        assert five_tuple not in local.node.streams
        assert port_is_free(relayed)
    await still_serving(local)
