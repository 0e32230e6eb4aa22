"""Two aioice agents forced to relay-only candidates connect through trelay and talk.

aioice is the TURN client of aiortc; with `TransportPolicy.RELAY` it gathers only
relayed candidates, so the nominated pair must be relay/relay and every byte crosses
the relay (counted by the node's data-path counters).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.aioice_call import relayed_call
from tests.helpers.turn_relay import PASSWORD, USERNAME, threaded_turn_node

pytestmark = pytest.mark.interop
TIMEOUT = 20.0


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
        kinds = asyncio.run(relayed_call(server, USERNAME, PASSWORD, transport))
        assert kinds == ["relay"] * 4
        counters = running.node.counters
        assert counters.client_to_peer_bytes >= 2 * len(b"ping through trelay")
        assert counters.peer_to_client_bytes >= 2 * len(b"ping through trelay")
