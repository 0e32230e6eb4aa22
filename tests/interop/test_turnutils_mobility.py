"""coturn's `turnutils_uclient -M` (RFC 8016 mobility) against trelay: every session moves.

With `-M` uclient asks for a MOBILITY-TICKET in its Allocate, then closes its socket,
opens a new one (a new local port: a new 5-tuple), and sends a Refresh carrying the
ticket from there (twice, 10 ms apart, the same transaction); only then does it bind
channels (or send indications) and relay, all from the new 5-tuple. It keeps a ticket
in 32 bytes and sends it with `strlen`: a longer ticket, or one with a NUL, would make
it skip the move and the run would pass without testing mobility, so the test counts
the moves the node made (`AllocationMoved`, one per session) as well as the loss.

Sessions run client to client (`-y`, each the other's peer, so every message crosses
the relay twice) and against a `turnutils_peer` echo server, with channels and with
indications (`-s`); `-c` leaves out the RTCP allocations, except in one run against the
peer, where each session's RTP/RTCP pair (EVEN-PORT R=1, then RESERVATION-TOKEN) moves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.supervised import running_workers
from tests.helpers.turn_relay import PASSWORD, USERNAME, threaded_turn_node
from tests.helpers.turnutils import (
    LENGTH,
    MESSAGES,
    NEEDS_UCLIENT_AND_PEER,
    UclientRun,
    assert_all_echoed,
    echo_peer,
    run_uclient,
)
from trelay.turn.actions import Action, AllocationCreated, AllocationMoved
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.server import TurnServer

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]


@dataclass(frozen=True, slots=True)
class Moved:
    """One uclient -M run against a fresh node: what uclient and the node saw."""

    run: UclientRun
    created: list[Address]  # relayed addresses of the allocations made
    moves: list[AllocationMoved]
    out: int  # datagrams relayed client -> peer
    back: int  # and peer -> client


def _record(
    server: TurnServer,
    monkeypatch: pytest.MonkeyPatch,
    created: list[Address],
    moves: list[AllocationMoved],
) -> None:
    """Keep the relayed address of every allocation made, and every AllocationMoved."""
    handle: Callable[[bytes, FiveTuple, float], list[Action]] = server.handle_message
    opened = server.relay_opened

    def recording(data: bytes, five_tuple: FiveTuple, now: float) -> list[Action]:
        actions = handle(data, five_tuple, now)
        moves.extend(a for a in actions if isinstance(a, AllocationMoved))
        return actions

    def recording_opened(
        five_tuple: FiveTuple, relayed: Address, now: float, **more: Any
    ) -> list[Action]:
        actions = opened(five_tuple, relayed, now, **more)
        created.extend(a.relayed for a in actions if isinstance(a, AllocationCreated))
        return actions

    monkeypatch.setattr(server, "handle_message", recording)
    monkeypatch.setattr(server, "relay_opened", recording_opened)


def _run(
    monkeypatch: pytest.MonkeyPatch,
    options: tuple[str, ...],
    peer: Address | None = None,
    *,
    rtcp: bool = False,
) -> Moved:
    flags = ["-M", *(() if rtcp else ("-c",)), "-n", str(MESSAGES), "-l", str(LENGTH), *options]
    if peer is not None:
        flags += ["-e", peer[0], "-r", str(peer[1])]
    moves: list[AllocationMoved] = []
    created: list[Address] = []
    with threaded_turn_node() as running:
        _record(running.node.server, monkeypatch, created, moves)
        before = copy.deepcopy(running.node.counters)
        run = run_uclient(running.udp, *flags)
    after = running.node.counters  # the node's thread has stopped: final
    out = after.client_to_peer_datagrams - before.client_to_peer_datagrams
    back = after.peer_to_client_datagrams - before.peer_to_client_datagrams
    return Moved(run, created, moves, out, back)


def _assert_moved_and_relayed(moved: Moved, sessions: int) -> None:
    run, moves, out, back = moved.run, moved.moves, moved.out, moved.back
    report = (
        f"uclient exit {run.returncode}\n{run.output[-3000:]}\n"
        f"allocations: {moved.created}\nmoves: {moves}"
    )
    assert run.returncode == 0, report
    summary = run.summary
    assert summary is not None, report
    # Every allocation uclient made (one per session, and with -y the probe allocation
    # it makes first) moved once, to a new client port, with its relayed address.
    assert len(moved.created) >= sessions, report
    assert sorted(m.relayed for m in moves) == sorted(moved.created), report
    assert all(m.previous.client != m.five_tuple.client for m in moves), report
    # Then everything relayed from the new 5-tuples, nothing lost.
    assert summary.sent_messages == MESSAGES * sessions, report
    assert summary.received_messages == summary.sent_messages, report
    assert summary.lost_packets == 0, report
    assert summary.send_dropped == 0, report
    assert out >= summary.sent_messages, report
    assert back >= summary.received_messages, report


@pytest.mark.parametrize("indications", [False, True], ids=["channels", "indications"])
def test_uclient_mobility_client_to_client(
    monkeypatch: pytest.MonkeyPatch, indications: bool
) -> None:
    options = ("-y", "-m", "1", *(("-s",) if indications else ()))
    _assert_moved_and_relayed(_run(monkeypatch, options), sessions=2)


@pytest.mark.parametrize("rtcp", [False, True], ids=["rtp", "rtp_rtcp"])
def test_uclient_mobility_to_turnutils_peer(monkeypatch: pytest.MonkeyPatch, rtcp: bool) -> None:
    # With RTCP (no -c), each session allocates an RTP/RTCP pair: EVEN-PORT with the R
    # bit, then RESERVATION-TOKEN; both allocations move.
    with echo_peer() as peer:
        moved = _run(monkeypatch, ("-m", "2"), peer, rtcp=rtcp)
    _assert_moved_and_relayed(moved, sessions=2)


def _all_moved(log: str) -> bool:
    created = log.count("allocation created")
    return created >= 4 and log.count("allocation moved") >= created


async def test_uclient_mobility_across_workers(tmp_path: Path) -> None:
    """`trelay serve --workers 4`: a moved session's new port usually hashes to another
    worker than its allocation's (6 of 8 in a sample run; which ones is up to the kernel's
    choice of uclient's ports, so it is not asserted: tests/node/test_mobility_workers.py
    crosses workers deterministically); every allocation moves, nothing is lost."""
    args = ("--workers", "4", "--listen-udp", "127.0.0.1:0", "--user", f"{USERNAME}:{PASSWORD}",
            "--allow-loopback-peers")  # fmt: skip
    with echo_peer() as peer:
        async with running_workers(tmp_path, *args) as node:
            [server] = node.addresses("udp")
            flags = ("-M", "-c", "-n", str(MESSAGES), "-l", str(LENGTH), "-m", "4",
                     "-e", peer[0], "-r", str(peer[1]))  # fmt: skip
            run = await trio.to_thread.run_sync(lambda: run_uclient(server, *flags))
            log = await node.log_when(_all_moved)
    report = f"uclient exit {run.returncode}\n{run.output[-3000:]}\n--- trelay ---\n{log[-3000:]}"
    assert run.returncode == 0, report
    created, moved = log.count("allocation created"), log.count("allocation moved")
    assert created >= 4 and moved == created, report
    assert_all_echoed(run, MESSAGES * 4, report, length=None)
