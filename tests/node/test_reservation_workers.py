"""RESERVATION-TOKEN across the workers of `trelay serve --workers 2` (RFC 8656 §7.2:
"the reservation is a server-wide reservation").

The supervisor's reuseport program hands a datagram to worker `worker_for(source, 2)`,
so the test picks its client ports: the RTP-like client allocates with EVEN-PORT R=1
from a port of worker 0 and gets a token naming worker 0 (its first byte); the RTCP-like
client presents it from a port of worker 1. Worker 1 hands the Allocate on (through the
supervisor) to worker 0, which redeems it (exactly the reserved port) and captures the
new client's 5-tuple, so its ChannelBind and ChannelData reach worker 0 too and the
peer's datagrams come back to it. Without the hand-over worker 1 would answer 508;
without the capture its ChannelBind would get 437 there. Tokens naming a worker that
issued no such token, or no worker of the node, are 508.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.helpers.supervised import Supervised, running_workers
from tests.helpers.turn_client import Peer, peer
from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import PASSWORD, REALM, USERNAME
from tests.node.test_bind_proxy_workers import connection_on
from tests.node.test_mobility_workers import UDP_WORKERS, WORKERS, active, alice_on
from tests.node.test_tcp_relay import RawClient
from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import Data, EvenPort, RequestedTransport, ReservationToken
from trelay.stun.codes import MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import Message, encode_message


def relayed_of(reply: Message) -> tuple[str, int]:
    attribute = reply.get(XorRelayedAddress)
    assert attribute is not None, reply
    return attribute.host, attribute.port


@asynccontextmanager
async def reserved_over_tcp(
    tmp_path: Path,
) -> AsyncIterator[tuple[Supervised, Peer, RawClient, tuple[str, int], bytes]]:
    """`trelay serve --workers 2` on TCP and a loopback peer; an RTP-like connection
    accepted by worker 0 holding an R=1 allocation (an even port, a token naming worker
    0), and an RTCP-like connection accepted by worker 1 holding none. Yields the node,
    the peer, the RTCP-like connection, the RTP relayed (host, even port) and the token;
    both connections close when the block ends."""
    args = ("--workers", str(WORKERS), "--listen-tcp", "127.0.0.1:0",
            "--user", f"{USERNAME}:{PASSWORD}", "--realm", REALM,
            "--allow-loopback-peers")  # fmt: skip
    async with running_workers(tmp_path, *args) as node, peer() as far:
        rtp = await connection_on(0, node)
        rtcp = await connection_on(1, node)
        try:
            reply = await rtp.call(Method.ALLOCATE, RequestedTransport(17), EvenPort(True))
            token = reply.get(ReservationToken)
            assert token is not None and token.value[0] == 0  # it names worker 0
            yield node, far, rtcp, relayed_of(reply), token.value
        finally:
            await trio.aclose_forcefully(rtp.stream)
            await trio.aclose_forcefully(rtcp.stream)


async def test_a_reservation_is_redeemed_from_another_workers_port(tmp_path: Path) -> None:
    async with running_workers(tmp_path, *UDP_WORKERS) as node, peer() as far:
        [server] = node.addresses("udp")
        rtp = alice_on(0, server)
        reply = await rtp.checked(Method.ALLOCATE, RequestedTransport(17), EvenPort(True))
        host, even = relayed_of(reply)
        token = reply.get(ReservationToken)
        assert token is not None and token.value[0] == 0  # it names worker 0
        assert even % 2 == 0
        assert active(await node.metrics()) == {"0": 1.0, "1": 0.0}

        rtcp = alice_on(1, server)
        redeemed = await rtcp.checked(
            Method.ALLOCATE, RequestedTransport(17), ReservationToken(token.value)
        )
        assert relayed_of(redeemed) == (host, even + 1)
        # The allocation is worker 0's; its client's requests and data land there.
        assert active(await node.metrics()) == {"0": 2.0, "1": 0.0}
        await rtcp.channel_bind(0x4001, far.address)
        await rtcp.send_channel_data(0x4001, b"rtcp from worker 1's port")
        assert await far.receive() == (b"rtcp from worker 1's port", (host, even + 1))
        await far.send((host, even + 1), b"back to the rtcp port")
        assert await rtcp.receive_data() == (0x4001, b"back to the rtcp port")

        # The token was taken: presented again (from yet another client), 508.
        again = alice_on(1, server)
        reply = await again.request(
            Method.ALLOCATE, RequestedTransport(17), ReservationToken(token.value)
        )
        assert error_code(reply) == 508
        # A token naming no worker of the node is answered where it arrived: 508.
        reply = await again.request(
            Method.ALLOCATE, RequestedTransport(17), ReservationToken(b"\x07" + token.value[1:])
        )
        assert error_code(reply) == 508
        assert active(await node.metrics()) == {"0": 2.0, "1": 0.0}
        assert await rtcp.refresh(0) == 0
        assert await rtp.refresh(0) == 0
        assert active(await node.metrics()) == {"0": 0.0, "1": 0.0}
        for client in (rtp, rtcp, again):
            await client.aclose()


async def test_a_reservation_over_tcp_is_redeemed_through_another_worker(
    tmp_path: Path,
) -> None:
    """Over TCP the connection is not steered but proxied (`trelay.node.bind_proxy`): the
    RTCP-like connection, accepted by worker 1 (found by its active allocations), sends
    the Allocate with worker 0's token; worker 1 hands the whole connection to worker 0,
    which redeems the token; the client's requests and relayed data then go through the
    proxy both ways. Without it worker 1 answers 508."""
    async with reserved_over_tcp(tmp_path) as (node, far, rtcp, (host, even), token):
        redeemed = await rtcp.call(Method.ALLOCATE, RequestedTransport(17), ReservationToken(token))
        assert relayed_of(redeemed) == (host, even + 1), redeemed.get(ErrorCodeAttribute)
        assert active(await node.metrics()) == {"0": 2.0, "1": 0.0}
        permitted = await rtcp.call(Method.CREATE_PERMISSION, XorPeerAddress(*far.address))
        assert permitted.message_class is MessageClass.SUCCESS, permitted
        send = Message(
            Method.SEND, MessageClass.INDICATION, os.urandom(12),
            (XorPeerAddress(*far.address), Data(b"rtcp through the proxy")),
        )  # fmt: skip
        await rtcp.stream.send_all(encode_message(send))
        assert await far.receive() == (b"rtcp through the proxy", (host, even + 1))
        await far.send((host, even + 1), b"back through the proxy")
        indication = await rtcp.indication()
        assert indication.method == Method.DATA
        assert indication.get(Data) == Data(b"back through the proxy")
        log = await node.log_when(lambda text: "connection proxied" in text)
    assert "connection proxied" in log, log[-3000:]
