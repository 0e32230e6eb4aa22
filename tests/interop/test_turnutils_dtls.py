"""coturn's `turnutils_uclient` over DTLS (`-S` without `-t`: RFC 7350) relays through trelay.

Each test starts a node listening for DTLS only (loopback, a throw-away self-signed
certificate, which uclient does not verify without `-E`; loopback peers allowed) and runs
uclient against it as a subprocess:

- client to client (`-y`): two sessions, each the other's peer, so every message crosses
  trelay twice; with channels (ChannelData, unpadded over DTLS) and with Send/Data
  indications (`-s`);
- against coturn's `turnutils_peer` (a UDP echo server): two sessions, each message out
  through the relay and its echo back.

uclient picks DTLS 1.0 or DTLS 1.2 at random for each connection and tries again on a
failed handshake; trelay refuses DTLS 1.0 (RFC 8996) with a fatal alert, so some of the
handshakes fail on the way (counted by the node) and every session ends on DTLS 1.2.

"Without loss" is uclient's own closing totals (everything sent came back, nothing lost
or dropped) and trelay's: the DTLS transport's data-path counters grew by at least that
much, and every allocation was a DTLS one.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.helpers.dtls_node import DtlsNode, dtls_node
from tests.helpers.turnutils import (
    LENGTH,
    MESSAGES,
    NEEDS_UCLIENT_AND_PEER,
    PEER,
    UCLIENT_TIMEOUT,
    UclientRun,
    assert_all_echoed,
    parse_summary,
    uclient_command,
)
from trelay.turn.addressing import Address, ClientTransport

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]

PEER_PROBES = 50
PEER_PROBE_TIMEOUT = 0.2


@asynccontextmanager
async def echo_peer() -> AsyncIterator[Address]:
    """coturn's `turnutils_peer` on a free loopback port, once it echoes."""
    assert PEER is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        peer: Address = probe.getsockname()
    process = await trio.lowlevel.open_process(
        [PEER, "-L", peer[0], "-p", str(peer[1])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            for _ in range(PEER_PROBES):
                await sock.sendto(b"trelay peer probe", peer)
                with trio.move_on_after(PEER_PROBE_TIMEOUT):
                    if await sock.recv(2048) == b"trelay peer probe":
                        break
            else:
                pytest.fail(f"turnutils_peer on {peer} does not echo")
        yield peer
    finally:
        process.kill()
        with trio.fail_after(UCLIENT_TIMEOUT):
            await process.wait()


async def uclient(server: Address, *options: str) -> tuple[int, str]:
    """uclient over DTLS (`-S`) against `server`; its exit status and output."""
    # LENGTH is even; odd sizes are covered by tests/node/test_dtls_turn.py.
    command = uclient_command(server, "-S", "-c", "-n", str(MESSAGES), "-l", str(LENGTH), *options)
    with trio.fail_after(UCLIENT_TIMEOUT):
        done = await trio.run_process(
            command, capture_stdout=True, stderr=subprocess.STDOUT, check=False
        )
    return done.returncode, done.stdout.decode(errors="replace")


def assert_relayed_without_loss(
    local: DtlsNode, returncode: int, output: str, sessions: int
) -> None:
    report = f"uclient exit {returncode}\n{output[-3000:]}\n{local.stats}"
    run = UclientRun(returncode, output, parse_summary(output))
    summary = assert_all_echoed(run, MESSAGES * sessions, report)
    counters = local.node.counters.by_transport[ClientTransport.DTLS]
    assert counters.client_to_peer_datagrams >= summary.sent_messages, report
    assert counters.client_to_peer_bytes >= summary.sent_bytes, report
    assert counters.peer_to_client_datagrams >= summary.received_messages, report
    assert counters.peer_to_client_bytes >= summary.received_bytes, report
    created = local.node.server.stats.allocations_created
    assert created[ClientTransport.DTLS] >= sessions, report
    assert sum(created.values()) == created[ClientTransport.DTLS], report
    assert local.stats.established >= sessions, report


@pytest.mark.parametrize("indications", [False, True], ids=["channels", "indications"])
async def test_uclient_client_to_client_over_dtls(indications: bool) -> None:
    options = ("-y", "-m", "1", *(("-s",) if indications else ()))
    async with dtls_node() as local:
        returncode, output = await uclient(local.dtls, *options)
        assert_relayed_without_loss(local, returncode, output, sessions=2)


async def test_uclient_to_turnutils_peer_over_dtls() -> None:
    async with dtls_node() as local, echo_peer() as peer:
        returncode, output = await uclient(local.dtls, "-m", "2", "-e", peer[0], "-r", str(peer[1]))
        assert_relayed_without_loss(local, returncode, output, sessions=2)
