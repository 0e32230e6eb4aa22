"""The relay_only marker, the turn_server and relayed_pair fixtures, and assert_relayed.

`host_to_host_call` is code under test that never heard of trelay: two aioice agents on
this host with no STUN or TURN server, which connect host-to-host. Under `relay_only`
the same call goes through the `turn_server` fixture's relay: its counters grow by at
least the bytes sent and `assert_relayed` passes; without the marker the selected pair is
host/host and `assert_relayed` fails naming it. The peers run in `asyncio.run` on the
test thread, the relay in its background trio thread; every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aioice
import pytest
from aiortc import RTCConfiguration, RTCDataChannel, RTCIceTransportPolicy, RTCPeerConnection

from tests.helpers.turn_client import TurnError, peer, udp_client
from trelay.icekit.ice_shim import SelectedPair, assert_relayed, connect_pair, selected_pairs
from trelay.icekit.loopback_relay import LoopbackRelay, RelayCounters, open_loopback_relay
from trelay.icekit.pytest_plugin import RelayedPairFactory

TIMEOUT = 20.0
PING = b"ping through the relay " * 20
PONG = b"pong " * 50
# Host candidates exclude 127.0.0.1 (aioice), so a host-to-host call needs another address.
HAS_HOST_ADDRESS = bool(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False))


@dataclass(frozen=True, slots=True)
class CallResult:
    pairs: list[tuple[SelectedPair, ...]]
    # What assert_relayed said about each agent, or None when it passed.
    verdicts: list[str | None]


async def host_to_host_call(
    relayed_addresses: Callable[[], frozenset[tuple[str, int]]],
) -> CallResult:
    left = aioice.Connection(ice_controlling=True, use_ipv6=False)
    right = aioice.Connection(ice_controlling=False, use_ipv6=False)
    try:
        await connect_pair(left, right, TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            await left.send(PING)
            assert await right.recv() == PING
            await right.send(PONG)
            assert await left.recv() == PONG
        verdicts: list[str | None] = []
        for agent in (left, right):
            try:
                assert_relayed(agent, relayed_addresses())
            except AssertionError as failure:
                verdicts.append(str(failure))
            else:
                verdicts.append(None)
        return CallResult([selected_pairs(left), selected_pairs(right)], verdicts)
    finally:
        await left.close()
        await right.close()


@pytest.mark.relay_only
def test_relay_only_forces_a_host_to_host_call_through_the_relay(
    turn_server: LoopbackRelay,
) -> None:
    before = turn_server.counters()
    result = asyncio.run(host_to_host_call(turn_server.relayed_addresses))
    after = turn_server.counters()

    assert result.verdicts == [None, None]
    for pairs in result.pairs:
        assert [(p.local_type, p.remote_type) for p in pairs] == [("relay", "relay")]
    sent = len(PING) + len(PONG)
    assert after.client_to_peer_bytes - before.client_to_peer_bytes >= sent
    assert after.peer_to_client_bytes - before.peer_to_client_bytes >= sent
    assert after.client_to_peer_datagrams > before.client_to_peer_datagrams
    assert after.allocations == 0  # both agents released their allocations on close


@pytest.mark.skipif(not HAS_HOST_ADDRESS, reason="no non-loopback IPv4 address for aioice")
def test_without_the_marker_the_same_call_is_host_to_host(turn_server: LoopbackRelay) -> None:
    result = asyncio.run(host_to_host_call(turn_server.relayed_addresses))

    for pairs in result.pairs:
        assert [(p.local_type, p.remote_type) for p in pairs] == [("host", "host")]
    for verdict, pairs in zip(result.verdicts, result.pairs, strict=True):
        assert verdict is not None
        assert verdict.startswith("the call is not relayed: selected component 1: local host ")
        assert str(pairs[0]) in verdict
        assert verdict.endswith("wanted local relay -> remote relay")
    assert turn_server.counters() == RelayCounters(0, 0, 0, 0, 0)


@pytest.mark.relay_only(transport="tcp")
def test_relay_only_over_tcp_reaches_the_relay_over_tcp(turn_server: LoopbackRelay) -> None:
    async def call() -> list[tuple[str, int] | None]:
        left = aioice.Connection(ice_controlling=True, use_ipv6=False)
        right = aioice.Connection(ice_controlling=False, use_ipv6=False)
        try:
            await connect_pair(left, right, TIMEOUT)
            assert_relayed(left)
            assert_relayed(right)
            return [left.turn_server, right.turn_server]
        finally:
            await left.close()
            await right.close()

    assert asyncio.run(call()) == [turn_server.tcp, turn_server.tcp]


def test_assert_relayed_without_a_selected_pair() -> None:
    agent = aioice.Connection(ice_controlling=True)
    with pytest.raises(AssertionError, match="no selected candidate pair: connect"):
        assert_relayed(agent)
    with pytest.raises(TypeError, match="not an aioice Connection or aiortc RTCPeerConnection"):
        selected_pairs(object())


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_relayed_pair_fixture(
    relayed_pair: RelayedPairFactory, turn_server: LoopbackRelay, transport: str
) -> None:
    async def use() -> tuple[int, str]:
        async with relayed_pair(transport=transport) as pair:
            await pair.left.send(PING)
            assert await asyncio.wait_for(pair.right.recv(), TIMEOUT) == PING
            assert turn_server.allocations == 2
            # Peer-reflexive or not, both remote addresses are the relay's allocations.
            for agent in (pair.left, pair.right):
                (selected,) = assert_relayed(agent, turn_server.relayed_addresses())
                assert selected.remote_address in turn_server.relayed_addresses()
            return pair.turn.uri.port, pair.turn.transport

    port, chosen = asyncio.run(use())
    assert chosen == transport
    assert (
        port
        == {"udp": turn_server.udp, "tcp": turn_server.tcp, "tls": turn_server.tls}[transport][1]
    )
    assert turn_server.allocations == 0
    assert turn_server.counters().client_to_peer_bytes >= len(PING)


async def data_channel_call() -> list[tuple[SelectedPair, ...]]:
    """Code under test: two aiortc peers with the default configuration (no servers)."""
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        async with asyncio.timeout(TIMEOUT):
            opened = asyncio.Event()
            remote: asyncio.Queue[RTCDataChannel] = asyncio.Queue()
            received: asyncio.Queue[str | bytes] = asyncio.Queue()
            channel = offerer.createDataChannel("shim")
            channel.on("open", opened.set)
            answerer.on("datachannel", remote.put_nowait)
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            await opened.wait()
            incoming = await remote.get()
            incoming.on("message", received.put_nowait)
            channel.send(PING)
            assert await received.get() == PING
            return [assert_relayed(offerer), assert_relayed(answerer)]
    finally:
        await asyncio.wait_for(asyncio.gather(offerer.close(), answerer.close()), TIMEOUT)


@pytest.mark.relay_only
def test_aiortc_data_channel_under_relay_only(turn_server: LoopbackRelay) -> None:
    forced = RTCPeerConnection()
    configuration: RTCConfiguration = forced._RTCPeerConnection__configuration  # type: ignore[attr-defined]
    assert configuration.iceTransportPolicy is RTCIceTransportPolicy.RELAY
    urls = [server.urls for server in configuration.iceServers or []]
    assert urls[0] == f"turn:127.0.0.1:{turn_server.udp[1]}?transport=udp"
    asyncio.run(forced.close())

    before = turn_server.counters()
    pairs = asyncio.run(data_channel_call())
    assert [[(p.local_type, p.remote_type) for p in agent] for agent in pairs] == [
        [("relay", "relay")],
        [("relay", "relay")],
    ]
    after = turn_server.counters()
    assert after.client_to_peer_bytes - before.client_to_peer_bytes >= len(PING)


async def test_open_loopback_relay_in_a_trio_test() -> None:
    async with open_loopback_relay() as relay, peer() as target:
        async with udp_client(relay.udp) as client:
            client.username = relay.credentials.username
            client.password = relay.credentials.password
            relayed = await client.allocate()
            assert relayed in relay.relayed_addresses()
            assert relay.counters().allocations == 1
            await client.create_permission(target.address)
            await client.send_indication(target.address, PING)
            data, source = await target.receive()
            assert (data, source) == (PING, relayed)
        assert relay.counters().client_to_peer_bytes == len(PING)


async def test_turn_rest_secret_credentials() -> None:
    async with open_loopback_relay(secret="test-secret") as relay:
        username = relay.credentials.username
        expiry, _, user = username.partition(":")
        assert expiry.isdigit()
        assert user == "trelay-test"
        assert relay.credentials.secret == "test-secret"
        assert "test-secret" not in repr(relay.credentials)
        async with udp_client(relay.udp) as client:
            client.username, client.password = username, relay.credentials.password
            await client.allocate()
        async with udp_client(relay.udp) as client:
            client.username, client.password = username, "not-the-password"
            with pytest.raises(TurnError) as raised:
                await client.allocate()
            assert raised.value.code == 401


def test_turn_server_fixture_configuration(turn_server: LoopbackRelay) -> None:
    configuration = turn_server.ice_configuration
    assert configuration["iceTransportPolicy"] == "relay"
    servers = configuration["iceServers"]
    assert isinstance(servers, list)
    stun, turn = servers
    assert stun == {
        "urls": [f"stun:127.0.0.1:{turn_server.udp[1]}", f"stuns:127.0.0.1:{turn_server.tls[1]}"]
    }
    assert turn == {
        "urls": [
            f"turn:127.0.0.1:{turn_server.udp[1]}?transport=udp",
            f"turn:127.0.0.1:{turn_server.tcp[1]}?transport=tcp",
            f"turns:127.0.0.1:{turn_server.tls[1]}?transport=tcp",
        ],
        "username": turn_server.credentials.username,
        "credential": turn_server.credentials.password,
    }
    browser = turn_server.rtc_configuration(transports=("udp", "tcp"), policy="all")
    assert browser == {
        "iceServers": [
            {"urls": [f"stun:127.0.0.1:{turn_server.udp[1]}"]},
            {**turn, "urls": turn["urls"][:2]},
        ],
        "iceTransportPolicy": "all",
    }
    assert len(turn_server.credentials.password) >= 16
    assert turn_server.credentials.password not in repr(turn_server.credentials)
