"""Headless Debian Chromium makes a relay-only WebRTC call through trelay (design §7).

Two RTCPeerConnections in one page, both with `iceTransportPolicy: "relay"` and trelay
as their only ICE server (TURN over UDP or over TCP), open a data channel; one side
sends a message and the other answers it. Chromium's `getStats()` must then show a
relay/relay selected pair on both sides, relayed over the requested protocol, and
trelay's own state must agree: the allocations are on that client transport, their
relayed addresses are the ones Chromium reports, and the data path carried the bytes.
Hanging up must end the allocations (Refresh with LIFETIME 0 over UDP, the connection
closing over TCP).

The browser is the Debian one (tests/helpers/chromium.py); the page is about:blank,
where RTCPeerConnection is available, and the call itself is tests/interop/relay_call.js.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from tests.helpers.chromium import (
    CHROMEDRIVER,
    SCRIPT_TIMEOUT,
    check_relayed_call,
    diagnostics,
    headless_chromium,
    missing_binaries,
    wait_for_no_allocations,
)
from tests.helpers.turn_relay import PASSWORD, USERNAME, RunningNode, threaded_turn_node
from trelay.turn.addressing import ClientTransport

pytestmark = pytest.mark.interop

RELAY_CALL = (Path(__file__).parent / "relay_call.js").read_text(encoding="utf-8")
MESSAGE = "hello through trelay"
# The page answers (with its diagnostics) this long before Selenium's script timeout.
PAGE_MARGIN = 5.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Debian Chromium is not installed ({', '.join(missing)} missing; "
            "apt-get install chromium chromium-driver)"
        )
    with headless_chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver:
        yield driver


def relay_call(browser: webdriver.Chrome, running: RunningNode, transport: str) -> dict[str, Any]:
    host, port = running.udp if transport == "udp" else running.tcp
    browser.get("about:blank")
    result = browser.execute_async_script(
        RELAY_CALL,
        {
            "url": f"turn:{host}:{port}?transport={transport}",
            "username": USERNAME,
            "credential": PASSWORD,
            "message": MESSAGE,
            "deadlineMs": int((SCRIPT_TIMEOUT - PAGE_MARGIN) * 1000),
        },
    )
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_chromium_relay_only_call(browser: webdriver.Chrome, transport: str) -> None:
    # The driver really is the Debian one (SE_CHROMEDRIVER could have overridden it).
    assert browser.service.path == str(CHROMEDRIVER)
    with threaded_turn_node() as running:
        result = relay_call(browser, running, transport)
        # Snapshot while the call is up (a C-level copy: safe against the node's thread).
        allocations = list(running.node.server.allocations.values())
        counters = running.node.counters
        browser.execute_script("window.trelayHangUp()")
        left = wait_for_no_allocations(running)

    assert result["ok"], diagnostics(result, browser)
    # Relay policy: relayed candidates only, relay/relay pairs between relayed addresses
    # trelay handed out (`check_relayed_call`); and each side relayed over `transport`.
    pairs = check_relayed_call(result, result, browser, allocations, MESSAGE)
    for pair in pairs:
        assert pair["relayProtocol"] == transport, pair
    # All on the requested client transport: over TCP the UDP listener allocated nothing.
    assert {a.five_tuple.transport for a in allocations} == {ClientTransport(transport)}

    # Every byte of the call (ICE checks, DTLS, SCTP) crossed trelay's data path.
    exchanged = len(MESSAGE) + len("echo:" + MESSAGE)
    assert counters.client_to_peer_bytes >= exchanged
    assert counters.peer_to_client_bytes >= exchanged

    # Hanging up released the allocations.
    assert left == 0
