"""coturn's `turnutils_uclient -T` (RFC 6062 TCP relaying) through trelay, without loss.

`-T` implies client-to-client (`-y`, `-c`): uclient makes two TCP allocations over TCP
(or TLS with `-S`), creates permissions, and one Connects to the other's relayed
address; the other gets a ConnectionAttempt, and both bind a data connection with
ConnectionBind. Every message then goes client -> data connection -> relay A -> relay
B's listening socket -> data connection -> client, raw bytes with no STUN framing.

"Without loss" is uclient's own totals (everything sent was received), the node's
data-path counters of the transport (each message is counted client to peer on one
splice and peer to client on the other), and the core's view: a Connect answered with
a CONNECTION-ID, a peer accepted with a ConnectionAttempt, two data connections spliced.

uclient's passive mode (`-P`, "RFC 6062 with an active peer") is not here: against
coturn 4.6.1's own turnserver it loses half its messages too (tried: 3 of 6 received by
both servers), so it checks nothing about the server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.supervised import running_workers, total
from tests.helpers.turn_relay import PASSWORD, USERNAME, threaded_turn_node
from tests.helpers.turnutils import UCLIENT, assert_all_echoed, run_uclient
from trelay.stun.attributes import ConnectionId
from trelay.stun.message import decode_message
from trelay.turn.actions import AcceptPeer, Action, SendToClient, SpliceConnections
from trelay.turn.addressing import ClientTransport

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        UCLIENT is None, reason="coturn's turnutils_uclient is needed (apt-get install coturn)"
    ),
]

MESSAGES = 20  # -n: messages per session (two sessions)
LENGTH = 200  # -l: bytes per message


def _counting(method: Callable[..., list[Action]], seen: list[Action]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> list[Action]:
        actions = method(*args, **kwargs)
        seen.extend(actions)
        return actions

    return counted


@pytest.mark.parametrize("transport", [ClientTransport.TCP, ClientTransport.TLS])
def test_uclient_tcp_relay(transport: ClientTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = ["-T", "-n", str(MESSAGES), "-l", str(LENGTH)]
    if transport is ClientTransport.TLS:
        flags.append("-S")
    seen: list[Action] = []
    connects: list[Action] = []
    with threaded_turn_node() as running:
        server = running.node.server
        for name in ("peer_arrived", "handle_message"):
            monkeypatch.setattr(server, name, _counting(getattr(server, name), seen))
        monkeypatch.setattr(server, "peer_connected", _counting(server.peer_connected, connects))
        before = copy.deepcopy(running.node.counters.by_transport[transport])
        address = running.tls if transport is ClientTransport.TLS else running.tcp
        run = run_uclient(address, *flags)
    after = running.node.counters.by_transport[transport]
    report = f"uclient exit {run.returncode}\n{run.output[-3000:]}\ncounters {after}"
    summary = assert_all_echoed(run, 2 * MESSAGES, report, length=LENGTH)
    # Both splices: one carried the bytes client to peer, the other peer to client.
    sent = summary.sent_bytes
    assert after.client_to_peer_bytes - before.client_to_peer_bytes >= sent, report
    assert after.peer_to_client_bytes - before.peer_to_client_bytes >= sent, report
    answers = [decode_message(a.data) for a in connects if isinstance(a, SendToClient)]
    assert any(answer.get(ConnectionId) is not None for answer in answers), report
    assert sum(isinstance(action, AcceptPeer) for action in seen) >= 1, report
    assert sum(isinstance(action, SpliceConnections) for action in seen) >= 2, report


@pytest.mark.parametrize("transport", [ClientTransport.TCP, ClientTransport.TLS])
async def test_uclient_tcp_relay_across_workers(transport: ClientTransport, tmp_path: Path) -> None:
    """`trelay serve --workers 2`: the data connections of ConnectionBind reach either
    worker (the kernel's SO_REUSEPORT hash of their new ports); one that reaches the
    other worker than its allocation's is proxied there (`trelay.node.bind_proxy`).
    Which ones cross is up to uclient's ports (not asserted here:
    tests/node/test_bind_proxy_workers.py crosses deterministically); before, TCP
    allocations were refused (442) with workers."""
    kind = transport.value
    args = ("--workers", "2", f"--listen-{kind}", "127.0.0.1:0", "--user",
            f"{USERNAME}:{PASSWORD}", "--allow-loopback-peers")  # fmt: skip
    flags = ["-T", "-n", str(MESSAGES), "-l", str(LENGTH)]
    if transport is ClientTransport.TLS:
        flags.append("-S")
    async with running_workers(tmp_path, *args) as node:
        [server] = node.addresses(kind)
        run = await trio.to_thread.run_sync(lambda: run_uclient(server, *flags))
        samples = await node.metrics()
        log = node.stderr_path.read_text()
    report = (
        f"uclient exit {run.returncode}\n{run.output[-3000:]}\n--- trelay ---\n{log[-3000:]}\n"
        f"data connections proxied: {log.count('connection proxied')}"
    )
    summary = assert_all_echoed(run, 2 * MESSAGES, report, length=LENGTH)
    # Both splices carried every byte, on whichever worker holds each allocation.
    relayed = total(samples, "trelay_relayed_bytes_total", direction="client_to_peer",
                    transport=kind)  # fmt: skip
    assert relayed >= summary.sent_bytes, report
