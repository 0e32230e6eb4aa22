"""Two aiortc peer connections forced to relay-only candidates open a data channel via trelay.

aiortc is the WebRTC stack most Python test authors reach for; with
`RTCIceTransportPolicy.RELAY` its ICE agent (aioice) gathers only relayed candidates,
so DTLS, SCTP and the data channel all ride on a relay/relay pair through the node.

What is checked, for a TURN control connection over UDP and over TCP:
- the data channel opens on both sides, a message goes one way and an answer comes back;
- the pair aioice nominated is relay/relay on both peers (aiortc's `getStats()` has no
  candidate-pair entries, so the pair is read from the ICE transport's aioice agent);
- while the call is up, trelay holds exactly the two allocations, both reached over the
  requested client transport (so the TCP case really went over TCP), and none once the
  peers have closed;
- trelay's data-path counters grew both ways by at least the application bytes.

The node runs in a background trio thread (`threaded_turn_node`); the peers run in
`asyncio.run` on the test thread, with every wait bounded by `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from tests.helpers.turn_relay import PASSWORD, USERNAME, threaded_turn_node
from trelay.turn.addressing import ClientTransport, FiveTuple

pytestmark = pytest.mark.interop
TIMEOUT = 30.0
PING = "ping through trelay over aiortc"
PONG = "pong"

# Reads the node's allocations from the test thread (the node runs in another thread).
AllocationsSnapshot = Callable[[], list[FiveTuple]]


@dataclass(frozen=True, slots=True)
class CallResult:
    """What the call saw, gathered before the peers close."""

    received_by_answerer: str | bytes
    received_by_offerer: str | bytes
    # (local type, remote type) of the nominated pair: offerer's, then answerer's.
    pair_types: list[tuple[str, str]]
    allocations: list[FiveTuple]


def relay_only(url: str) -> RTCConfiguration:
    server = RTCIceServer(urls=url, username=USERNAME, credential=PASSWORD)
    return RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def nominated_pair_types(peer: RTCPeerConnection) -> tuple[str, str]:
    # aiortc stacks SCTP on DTLS on an RTCIceTransport whose `_connection` is the aioice
    # agent; aioice keeps the nominated pair per component, and a data channel uses one.
    sctp = peer.sctp
    assert sctp is not None, "no SCTP transport: the data channel was not negotiated"
    agent = sctp.transport.transport._connection
    pair = agent._nominated[1]
    return (str(pair.local_candidate.type), str(pair.remote_candidate.type))


async def signal(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    # aiortc gathers every candidate inside setLocalDescription, so the descriptions
    # carry complete candidate lists and no trickle is needed.
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def relayed_data_channel(url: str, allocations: AllocationsSnapshot) -> CallResult:
    offerer = RTCPeerConnection(relay_only(url))
    answerer = RTCPeerConnection(relay_only(url))
    try:
        loop = asyncio.get_running_loop()
        opened = asyncio.Event()
        remote_channel: asyncio.Future[RTCDataChannel] = loop.create_future()
        at_answerer: asyncio.Queue[str | bytes] = asyncio.Queue()
        at_offerer: asyncio.Queue[str | bytes] = asyncio.Queue()

        channel = offerer.createDataChannel("trelay")
        channel.on("open", opened.set)
        channel.on("message", at_offerer.put_nowait)

        def on_datachannel(incoming: RTCDataChannel) -> None:
            incoming.on("message", at_answerer.put_nowait)
            if not remote_channel.done():
                remote_channel.set_result(incoming)

        answerer.on("datachannel", on_datachannel)

        await asyncio.wait_for(signal(offerer, answerer), TIMEOUT)
        await asyncio.wait_for(opened.wait(), TIMEOUT)
        incoming = await asyncio.wait_for(remote_channel, TIMEOUT)
        assert channel.readyState == "open"
        assert incoming.readyState == "open"
        assert incoming.label == "trelay"

        channel.send(PING)
        received_by_answerer = await asyncio.wait_for(at_answerer.get(), TIMEOUT)
        incoming.send(PONG)
        received_by_offerer = await asyncio.wait_for(at_offerer.get(), TIMEOUT)

        return CallResult(
            received_by_answerer,
            received_by_offerer,
            [nominated_pair_types(offerer), nominated_pair_types(answerer)],
            allocations(),
        )
    finally:
        # Both close even if one of them fails (each deletes its allocation on the node).
        await asyncio.wait_for(asyncio.gather(offerer.close(), answerer.close()), TIMEOUT)


@pytest.mark.parametrize(
    "transport", [ClientTransport.UDP, ClientTransport.TCP], ids=["udp", "tcp"]
)
def test_aiortc_relay_only_data_channel(transport: ClientTransport) -> None:
    with threaded_turn_node() as running:
        host, port = running.udp if transport is ClientTransport.UDP else running.tcp
        url = f"turn:{host}:{port}?transport={transport.value}"

        def allocations() -> list[FiveTuple]:
            # dict.copy() is one C call under the GIL: a consistent view from this thread.
            return list(running.node.server.allocations.copy())

        result = asyncio.run(relayed_data_channel(url, allocations))

        assert result.received_by_answerer == PING
        assert result.received_by_offerer == PONG
        assert result.pair_types == [("relay", "relay"), ("relay", "relay")]
        # One allocation per peer, each reached over the transport in the TURN URL.
        assert len(result.allocations) == 2
        assert {five_tuple.transport for five_tuple in result.allocations} == {transport}
        assert {five_tuple.server for five_tuple in result.allocations} == {(host, port)}
        # aioice awaits its Refresh(lifetime 0) answer when a peer closes, so both are gone.
        assert allocations() == []
        counters = running.node.counters
        assert counters.client_to_peer_datagrams > 0
        assert counters.peer_to_client_datagrams > 0
        assert counters.client_to_peer_bytes >= len(PING) + len(PONG)
        assert counters.peer_to_client_bytes >= len(PING) + len(PONG)
