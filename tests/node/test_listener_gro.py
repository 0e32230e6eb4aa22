"""The UDP listener's GRO (`trelay.node.data_path.ClientReader` with `trelay.node.gso.GroState`,
issue 13 Deliver 2): a client's burst sent with GSO reaches the node as one buffer while
the listener reads with UDP_GRO (on loopback, what a NIC with GRO delivers), and each of
its datagrams is taken as if it had come alone: relayed in order and counted once, a
STUN message among them answered, a short last one relayed, one on an unbound channel
dropped and counted. Every test runs twice: with GRO, and with it forced off
(`gso.GRO_ENABLED`, as `TRELAY_GRO=0` sets it), where the kernel cuts the same sends
into separate datagrams and the outcome must be the same."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio

from tests.helpers.raw_peer import address, raw_peer
from tests.helpers.turn_client import LocalNode, TurnClient, start_node, udp_client
from trelay.node import gso
from trelay.stun.attributes import Software
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.addressing import Address
from trelay.turn.stats import Drop

pytestmark = pytest.mark.skipif(not gso.GSO_ENABLED, reason="Linux UDP GSO/GRO only")

TIMEOUT = 10.0


@pytest.fixture(params=[True, False], ids=["gro", "gro-off"])
def gro(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """GRO on, or forced off before the node starts."""
    if request.param and not gso.GRO_ENABLED:
        pytest.skip("GRO is off in this environment (TRELAY_GRO=0): the gro-off runs cover it")
    if not request.param:
        monkeypatch.setattr(gso, "GRO_ENABLED", False)
    return bool(request.param)


async def receive(sock: socket.socket) -> tuple[bytes, Address]:
    with trio.fail_after(TIMEOUT):
        await trio.lowlevel.wait_readable(sock)
    data, source = sock.recvfrom(65535)
    return data, (source[0], source[1])


@dataclass
class Flow:
    """A client with channels 0x4000 to `far` and 0x4001 to `near`, each channel's socket
    connected (one datagram sent on each), and its raw socket for GSO sends."""

    local: LocalNode
    client: TurnClient
    raw: socket.socket
    relayed: Address
    far: socket.socket
    near: socket.socket

    def send_gso(self, segments: list[bytes], segment: int) -> None:
        """One `sendmsg` with UDP_SEGMENT: the kernel cuts it every `segment` bytes."""
        self.raw.sendmsg([b"".join(segments)], gso.segment_control(segment), 0, self.local.udp)

    def frame(self, channel: int, payload: bytes) -> bytes:
        return self.client.session.channel_data(channel, payload)

    def listener_gro(self) -> bool:
        sock = self.local.node.udp_sockets[self.local.udp]
        return bool(sock.getsockopt(gso.SOL_UDP, gso.UDP_GRO))


@asynccontextmanager
async def flow(gro: bool) -> AsyncIterator[Flow]:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as client, raw_peer() as far, raw_peer() as near:
            relayed = await client.allocate()
            await client.channel_bind(0x4000, address(far))
            await client.channel_bind(0x4001, address(near))
            raw: socket.socket = client.transport.raw  # type: ignore[union-attr]
            result = Flow(local, client, raw, relayed, far, near)
            for channel, peer in ((0x4000, far), (0x4001, near)):
                await client.send_channel_data(channel, b"hello")
                assert await receive(peer) == (b"hello", relayed)
            # A burst of one flow, datagram by datagram: the listener's GRO turns on.
            warm_up = [b"w%03d" % index for index in range(2 * gso.GRO_BUSY)]
            for payload in warm_up:
                raw.sendto(result.frame(0x4000, payload), local.udp)
            for payload in warm_up:
                assert await receive(far) == (payload, relayed)
            assert result.listener_gro() is gro
            yield result
        nursery.cancel_scope.cancel()


def numbered(count: int, size: int, tag: bytes) -> list[bytes]:
    return [(tag + b"%03d" % index).ljust(size, b".") for index in range(count)]


async def test_a_gso_burst_is_relayed_datagram_by_datagram_in_order_counted_once(
    gro: bool,
) -> None:
    async with flow(gro) as f:
        counters, stats = f.local.node.counters, f.local.udp_stats
        relayed0, bytes0 = counters.client_to_peer_datagrams, counters.client_to_peer_bytes
        received0 = stats.datagrams_received
        payloads = numbered(40, 1200, b"a")
        f.send_gso([f.frame(0x4000, payload) for payload in payloads], 1204)
        more = numbered(30, 100, b"b")  # a second burst, another size
        f.send_gso([f.frame(0x4000, payload) for payload in more], 104)
        for payload in payloads + more:
            assert await receive(f.far) == (payload, f.relayed)
        assert counters.client_to_peer_datagrams - relayed0 == 70
        assert counters.client_to_peer_bytes - bytes0 == 40 * 1200 + 30 * 100
        assert stats.datagrams_received - received0 == 70
        assert not any(counters.dropped.values())
        assert f.listener_gro() is gro


async def test_a_burst_fills_the_open_run_and_its_rest_starts_another(gro: bool) -> None:
    """Datagrams alone, then a burst of the same flow and size: the burst's first
    datagrams join the run the lone ones opened, up to a run's bounds, the rest form the
    next run; a shorter last datagram leaves on its own. All in order, each counted."""
    async with flow(gro) as f:
        counters = f.local.node.counters
        relayed0, bytes0 = counters.client_to_peer_datagrams, counters.client_to_peer_bytes
        alone = numbered(3, 1000, b"s")
        burst = numbered(gso.MAX_SEGMENTS - 2, 1000, b"t")  # with "last": 63 segments
        for payload in alone:
            f.raw.sendto(f.frame(0x4000, payload), f.local.udp)
        f.send_gso([f.frame(0x4000, payload) for payload in [*burst, b"last"]], 1004)
        for payload in [*alone, *burst, b"last"]:
            assert await receive(f.far) == (payload, f.relayed)
        assert counters.client_to_peer_datagrams - relayed0 == 3 + len(burst) + 1
        assert counters.client_to_peer_bytes - bytes0 == 1000 * (3 + len(burst)) + 4
        assert not any(counters.dropped.values())


async def test_mixed_channels_a_stun_request_and_a_short_last_segment(gro: bool) -> None:
    async with flow(gro) as f:
        counters = f.local.node.counters
        relayed0 = counters.client_to_peer_datagrams
        # A Binding request of exactly one segment (28 bytes: header and SOFTWARE "abcd").
        binding = Message(
            Method.BINDING, MessageClass.REQUEST, new_transaction_id(), (Software("abcd"),)
        )
        stun = encode_message(binding)
        assert len(stun) == 28
        far_payloads = numbered(6, 24, b"f")
        near_payloads = numbered(5, 24, b"n")
        segments = [
            f.frame(0x4000, far_payloads[0]),
            f.frame(0x4000, far_payloads[1]),
            f.frame(0x4001, near_payloads[0]),
            f.frame(0x4000, far_payloads[2]),
            stun,
            f.frame(0x4001, near_payloads[1]),
            f.frame(0x4001, near_payloads[2]),
            f.frame(0x4001, near_payloads[3]),
            f.frame(0x4000, far_payloads[3]),
            f.frame(0x4000, far_payloads[4]),
            f.frame(0x4001, near_payloads[4]),
            f.frame(0x4000, b"short"),  # the last segment: 9 bytes
        ]
        f.send_gso(segments, 28)
        for payload in [*far_payloads[:5], b"short"]:
            assert await receive(f.far) == (payload, f.relayed)
        for payload in near_payloads:
            assert await receive(f.near) == (payload, f.relayed)
        reply, _ = await receive(f.raw)
        answer = decode_message(reply)
        assert answer.transaction_id == binding.transaction_id
        assert (answer.method, answer.message_class) == (Method.BINDING, MessageClass.SUCCESS)
        assert counters.client_to_peer_datagrams - relayed0 == 11
        assert not any(counters.dropped.values())


async def test_a_segment_on_an_unbound_channel_is_dropped_and_counted(gro: bool) -> None:
    async with flow(gro) as f:
        counters = f.local.node.counters
        relayed0 = counters.client_to_peer_datagrams
        payloads = numbered(9, 300, b"c")
        frames = [f.frame(0x4000, payload) for payload in payloads]
        frames.insert(4, f.frame(0x4005, b"x" * 300))  # no such channel
        lying = bytearray(f.frame(0x4000, b"y" * 300))
        lying[2:4] = (400).to_bytes(2, "big")  # says more than its segment holds
        frames.insert(7, bytes(lying))
        f.send_gso(frames, 304)
        for payload in payloads:
            assert await receive(f.far) == (payload, f.relayed)
        assert counters.client_to_peer_datagrams - relayed0 == 9
        assert counters.dropped[Drop.NO_CHANNEL] == 1
        assert counters.dropped[Drop.MALFORMED] == 1
        assert sum(counters.dropped.values()) == 2
