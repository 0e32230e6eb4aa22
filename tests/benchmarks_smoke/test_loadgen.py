"""benchmarks/loadgen.c builds with the machine's C compiler and relays through trelay.

The benchmark (`benchmarks.relay_vs_coturn`) is never run by the tests; this checks its
moving parts on a few datagrams: the C load generator on inherited client sockets (the
flows allocated and channel-bound by the Python side), its echo peer, and the driver's
window bookkeeping, against a real `trelay serve` on loopback. Nothing is timed: the
assertions are on counts (every datagram sent came back through the relay, both ways).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.relay_bench import Server, start_trelay
from benchmarks.relay_vs_coturn import (
    EchoPeer,
    LoadWindow,
    Mode,
    close_flows,
    compile_loadgen,
    compiler,
    echo_peer,
    open_flows,
    run_window,
    spread_source,
)

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs gcc or cc")

SO_NO_CHECK = 11  # <asm-generic/socket.h>: no UDP checksums, so no GSO either


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_loadgen(tmp_path_factory.mktemp("loadgen"))


@pytest.fixture
def trelay(tmp_path: Path) -> Iterator[Server]:
    server = start_trelay(tmp_path)
    try:
        yield server
    finally:
        server.process.kill()
        server.process.wait(10)


@pytest.fixture
def peer(loadgen: Path) -> Iterator[EchoPeer]:
    with echo_peer(loadgen, seconds=60.0) as running:
        yield running


def one_window(
    loadgen: Path, trelay: Server, peer: EchoPeer, mode: Mode, base: int, duration: float
) -> LoadWindow:
    """One measured window of `mode` through trelay to the echo peer, over as many flows
    as the mode has (their sources spread from 127.`base`), closed afterwards."""
    flows = open_flows(trelay.target, mode.flows, peer.address, base=base)
    try:
        return run_window(
            loadgen, flows, mode, peer, trelay.cpu, warmup=0.2, duration=duration, drain=2.0
        )
    finally:
        close_flows(flows)


def test_paced_flows_come_back_whole(loadgen: Path, trelay: Server, peer: EchoPeer) -> None:
    """Paced mode ("audio"): every ChannelData sent reaches the echo peer through the
    relay and comes back as ChannelData on the same channel."""
    window = one_window(loadgen, trelay, peer, Mode("audio", 160, 3, rate=50.0), 40, 0.6)
    assert window.sent > 0
    assert window.received > 0
    assert window.peer_received > 0
    assert window.lost == 0
    assert window.peer_dropped == 0
    assert window.rtt_p50 > 0
    assert window.server_cpu > 0


def test_closed_loop_keeps_its_datagrams_in_flight(
    loadgen: Path, trelay: Server, peer: EchoPeer
) -> None:
    """Closed loop: each datagram that comes back is replaced, so the window keeps going
    (far more round trips than the 2 x 4 first sent), and nothing is lost."""
    window = one_window(loadgen, trelay, peer, Mode("saturated", 100, 2, inflight=4), 41, 0.5)
    assert window.received > 2 * 4
    assert window.relayed == window.received + window.peer_received
    assert window.lost == 0


def test_gso_bursts_come_back_whole(loadgen: Path, trelay: Server) -> None:
    """`--gso` (the "burst-gro" mode): the load generator and the echo peer send each run
    in one GSO message; trelay receives them (coalesced, where its sockets read with
    UDP_GRO) and every datagram comes back."""
    mode = Mode("burst-gro", 1200, 1, inflight=32, gso=True)
    with echo_peer(loadgen, seconds=60.0, gso=True) as peer:
        window = one_window(loadgen, trelay, peer, mode, 42, 0.5)
    assert window.received > 32
    assert window.relayed == window.received + window.peer_received
    assert window.lost == 0
    assert window.client_gso_runs > 0
    assert window.peer_gso_runs > 0


def test_gso_refused_by_the_kernel_falls_back_to_one_datagram_each(
    loadgen: Path, trelay: Server, peer: EchoPeer
) -> None:
    """A socket without UDP checksums (SO_NO_CHECK) makes the kernel refuse UDP_SEGMENT:
    the load generator turns GSO off and sends the same datagrams one by one."""
    mode = Mode("burst-gro", 1200, 1, inflight=32, gso=True)
    flows = open_flows(trelay.target, mode.flows, peer.address, base=43)
    try:
        for flow in flows:
            flow.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        window = run_window(
            loadgen, flows, mode, peer, trelay.cpu, warmup=0.2, duration=0.5, drain=2.0
        )
    finally:
        close_flows(flows)
    assert window.client_gso_runs == 0
    assert window.received > 32
    assert window.lost == 0


def test_loadgen_refuses_a_client_without_flows(loadgen: Path) -> None:
    done = subprocess.run(
        [str(loadgen), "client", "--size", "100", "--inflight", "1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 2
    assert "--fds" in done.stderr


def test_spread_sources_are_distinct_loopback_addresses() -> None:
    sources = {spread_source(index, 40) for index in range(70_000)}
    assert len(sources) == 70_000
    assert all(source.startswith("127.") for source in sources)
    assert max(int(part) for source in sources for part in source.split(".")[1:]) <= 250
