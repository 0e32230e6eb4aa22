"""Two aioice agents forced to relay-only candidates connect through trelay and talk.

aioice is the TURN client of aiortc; with `TransportPolicy.RELAY` it gathers only
relayed candidates, so the nominated pair must be relay/relay and every byte crosses
the relay (counted by the node's data-path counters).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aioice
import pytest

from relay.ice_shim import connect_pair, selected_pairs
from tests.interop.turn_relay import PASSWORD, USERNAME, threaded_turn_node

pytestmark = pytest.mark.interop
TIMEOUT = 20.0


async def relayed_call(server: tuple[str, int], transport: str) -> list[str]:
    def agent(controlling: bool) -> aioice.Connection:
        return aioice.Connection(
            ice_controlling=controlling,
            components=1,
            turn_server=server,
            turn_username=USERNAME,
            turn_password=PASSWORD,
            turn_transport="udp" if transport == "udp" else "tcp",
            turn_ssl=transport == "tls",
            transport_policy=aioice.TransportPolicy.RELAY,
            use_ipv6=False,
        )

    left, right = agent(True), agent(False)
    try:
        await connect_pair(left, right, TIMEOUT)
        await left.send(b"ping through trelay")
        assert await asyncio.wait_for(right.recv(), TIMEOUT) == b"ping through trelay"
        await right.send(b"pong")
        assert await asyncio.wait_for(left.recv(), TIMEOUT) == b"pong"
        pairs = [pair for agent_ in (left, right) for pair in selected_pairs(agent_)]
        return [kind for pair in pairs for kind in (pair.local_type, pair.remote_type)]
    finally:
        await left.close()
        await right.close()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_aioice_relay_only_call(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threaded_turn_node() as running:
        server = {"udp": running.udp, "tcp": running.tcp, "tls": running.tls}[transport]
        # aioice verifies the server certificate with the default trust store.
        trusted = tmp_path / "trelay-test-ca.pem"
        trusted.write_bytes(running.tls_certificate)
        monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
        kinds = asyncio.run(relayed_call(server, transport))
        assert kinds == ["relay"] * 4
        counters = running.node.counters
        assert counters.client_to_peer_bytes >= len(b"ping through trelay") + len(b"pong")
        assert counters.peer_to_client_bytes >= len(b"ping through trelay") + len(b"pong")
