"""A call keeps going through a SIGTERM: `trelay serve` drains (design §4) instead of
cutting it, and a second signal ends at once.

Each test runs the installed console script on loopback (port 0) with a drain timeout
far longer than the call, starts coturn's `turnutils_uclient` (two client sessions
relaying to each other through trelay, `-y`), sends SIGTERM once data flows (trelay's
own relayed-datagram counter says so), and checks:

- uclient's closing totals: every message sent came back, nothing lost or dropped;
- /readyz answered 503 while the call went on;
- over TCP, the call's end (its connections closing) ends the allocations, so the node
  ends on its own, status 0, and says why ("all allocations ended");
- over UDP, uclient leaves one allocation behind (its first, unused one): the node keeps
  draining after the call until a second SIGTERM ends it at once, status 0;
- the same with `--workers 2`;
- systemd was told READY=1 once ready, then STOPPING=1 and the allocations left
  (`$NOTIFY_SOCKET` pointed at a socket of the test's).

Every wait is bounded; nothing depends on how long the call takes.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from tests.helpers.supervised import Supervised, poll_until, running_workers, total
from tests.helpers.turn_relay import PASSWORD, USERNAME
from tests.helpers.turnutils import NEEDS_UCLIENT_AND_PEER, UclientRun
from tests.helpers.uclient_call import assert_no_loss, call_through

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]

TIMEOUT = 60


def node_args(*more: str) -> tuple[str, ...]:
    return ("--listen-udp", "127.0.0.1:0", "--listen-tcp", "127.0.0.1:0",
            "--listen-http", "127.0.0.1:0", "--user", f"{USERNAME}:{PASSWORD}",
            "--realm", "drain.test", "--allow-loopback-peers", "--drain-timeout", "600",
            *more)  # fmt: skip


async def call_through_sigterm(node: Supervised, *, tcp: bool) -> UclientRun:
    """Run a uclient call, SIGTERM the node once data flows, return uclient's run."""

    async def sigterm() -> None:
        node.process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return await node.status("/readyz") == 503

        await poll_until(draining)

    return await call_through(node, sigterm, tcp=tcp)


@contextmanager
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """An AF_UNIX datagram socket standing in for systemd's, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def notifications(sock: socket.socket) -> list[str]:
    """Every datagram received so far, one string each."""
    received = []
    while True:
        try:
            received.append(sock.recv(4096).decode())
        except BlockingIOError:
            return received


async def test_a_tcp_call_runs_through_sigterm_and_the_node_ends_when_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with notify_socket(tmp_path, monkeypatch) as systemd:
        async with running_workers(tmp_path, *node_args()) as node:
            # The ready line comes first, READY=1 right after it: wait for it (bounded).
            with trio.fail_after(TIMEOUT):
                await trio.lowlevel.wait_readable(systemd)
            assert notifications(systemd) == ["READY=1"]
            run = await call_through_sigterm(node, tcp=True)
            assert_no_loss(run)
            with trio.fail_after(TIMEOUT):
                assert await node.process.wait() == 0
        told = notifications(systemd)
    stderr = node.stderr_path.read_text()
    assert "Traceback" not in stderr
    # The call's two allocations at least (uclient's first may be gone already).
    started = re.search(
        r"SIGTERM received: draining, (\d+) allocations left, timeout 600 s", stderr
    )
    assert started is not None and int(started[1]) >= 2, stderr
    assert "drain over: all allocations ended" in stderr, stderr
    assert told[0] == f"STOPPING=1\nSTATUS=draining: {started[1]} allocations left", told


async def test_a_udp_call_runs_through_sigterm_and_a_second_one_ends_at_once(
    tmp_path: Path,
) -> None:
    async with running_workers(tmp_path, *node_args()) as node:
        run = await call_through_sigterm(node, tcp=False)
        assert_no_loss(run)
        # uclient's first allocation is never deleted: the node still drains for it.
        samples = await node.metrics()
        assert total(samples, "trelay_allocations_active") == 1
        assert await node.status("/readyz") == 503
        assert await node.stop(signal.SIGTERM) == 0
    stderr = node.stderr_path.read_text()
    assert "Traceback" not in stderr
    assert "SIGTERM received while draining: ending at once" in stderr, stderr
    assert "drain over: ended at once on request" in stderr, stderr


async def test_with_workers_a_call_runs_through_sigterm_and_a_second_one_ends_at_once(
    tmp_path: Path,
) -> None:
    async with running_workers(tmp_path, *node_args("--workers", "2")) as node:
        run = await call_through_sigterm(node, tcp=False)
        assert_no_loss(run)
        assert await node.status("/readyz") == 503
        assert await node.stop(signal.SIGTERM) == 0
    stderr = node.stderr_path.read_text()
    assert "Traceback" not in stderr
    assert "SIGTERM received: draining 2 workers" in stderr, stderr
    assert stderr.count("drain asked by the supervisor: draining") == 2, stderr
    assert "SIGTERM received while draining: ending at once" in stderr, stderr
    assert "drain over: ended at once on request" in stderr, stderr
