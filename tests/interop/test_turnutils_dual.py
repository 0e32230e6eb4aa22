"""coturn's `turnutils_uclient -Z` (dual allocation) against a dual-stack trelay node
(RFC 8656 §7.2 ADDITIONAL-ADDRESS-FAMILY; relay addresses 127.0.0.1 and ::1).

coturn sends ADDITIONAL-ADDRESS-FAMILY at the turnbis drafts' code point 0x8032, which
trelay takes as RFC 8656's 0x8000. uclient's Allocates get an IPv4 and an IPv6 relayed
address, its Refreshes name either family at random (both refresh the allocation), and
its messages to a `turnutils_peer` echo come back without loss through the IPv4 one.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.netutil import ipv6_loopback_works
from tests.helpers.turn_relay import REALM, threaded_turn_node
from tests.helpers.turnutils import (
    LENGTH,
    MESSAGES,
    NEEDS_UCLIENT_AND_PEER,
    echo_peer,
    run_uclient,
)
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.message import decode_message
from trelay.turn.actions import Action, SendToClient
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.config import TurnConfig

pytestmark = [
    pytest.mark.interop,
    NEEDS_UCLIENT_AND_PEER,
    pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here"),
]

DUAL = TurnConfig(realm=REALM, relay_host="127.0.0.1", relay_host_v6="::1")


def test_uclient_dual_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    granted: list[list[Address]] = []  # the relayed addresses of each Allocate success
    with echo_peer() as peer, threaded_turn_node(DUAL) as running:
        server = running.node.server
        relay_opened = server.relay_opened

        def recording(
            five_tuple: FiveTuple, relayed: Address, now: float, **kwargs: Any
        ) -> list[Action]:
            actions = relay_opened(five_tuple, relayed, now, **kwargs)
            for action in actions:
                if isinstance(action, SendToClient) and action.five_tuple == five_tuple:
                    reply = decode_message(action.data)
                    granted.append([(a.host, a.port) for a in reply.get_all(XorRelayedAddress)])
            return actions

        monkeypatch.setattr(server, "relay_opened", recording)
        flags = ("-Z", "-n", str(MESSAGES), "-l", str(LENGTH), "-m", "1")
        run = run_uclient(running.udp, *flags, "-e", peer[0], "-r", str(peer[1]))
    report = f"uclient exit {run.returncode}\n{run.output[-3000:]}\ngranted {granted}"
    summary = run.summary
    assert run.returncode == 0 and summary is not None, report
    assert summary.sent_messages == MESSAGES, report  # -Z implies -c: one session
    assert summary.received_messages == summary.sent_messages, report
    assert summary.received_bytes == summary.sent_bytes == MESSAGES * LENGTH, report
    assert summary.lost_packets == 0 and summary.send_dropped == 0, report
    assert granted, report
    for addresses in granted:
        assert [host for host, _ in addresses] == ["127.0.0.1", "::1"], report
