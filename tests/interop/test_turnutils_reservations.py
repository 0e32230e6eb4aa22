"""coturn's `turnutils_uclient` without `-c`: RTP/RTCP pairs through EVEN-PORT and
RESERVATION-TOKEN (RFC 8656 §7.2, §14.6, §14.9) against a trelay node.

Without `-c` uclient makes every session a pair: the RTP allocation asks for EVEN-PORT
with the R bit, and the RTCP one, from another client port, presents the
RESERVATION-TOKEN it got. Before trelay reserved ports it answered 508 "Port
reservations not supported" and uclient gave up.

Checked: uclient's own totals (every message of every RTP and RTCP session echoed by a
`turnutils_peer`, nothing lost), and what the node saw (`ReservationRecorder`): each R=1
Allocate got an even port and a token, each token's Allocate got exactly the reserved
port+1, in the same number; with the kernel choosing ports, with a range, and with
uclient's control connections over TCP; and against `trelay serve --workers 2`, where
an RTCP session's Allocate may reach another worker than its reservation's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.supervised import running_workers
from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import PASSWORD, REALM, USERNAME, threaded_turn_node
from tests.helpers.turnutils import (
    LENGTH,
    MESSAGES,
    NEEDS_UCLIENT_AND_PEER,
    UclientRun,
    assert_all_echoed,
    echo_peer,
    run_uclient,
)
from trelay.process.reuseport_steering import worker_for
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import EvenPort, ReservationToken
from trelay.stun.codes import MessageClass, Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import Message, decode_message, is_stun_header
from trelay.turn.actions import Action, SendToClient
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]

PAIRS = 1  # -m: clients, each an RTP and an RTCP session (msz=2)


@dataclass
class ReservationRecorder:
    """Wraps a live `TurnServer`'s `handle_message` and `relay_opened`: the Allocates
    that reserved a port (relayed address, token) and those that redeemed a token
    (token, relayed address or error code). A success comes out of `relay_opened`
    (once the runtime bound the port), an error out of `handle_message`. Written on
    the node's thread; read once it has stopped."""

    reserved: list[tuple[Address, bytes]] = field(default_factory=list)
    redeemed: list[tuple[bytes, Address | int]] = field(default_factory=list)
    # Allocate requests by transaction id, until answered (at most a few per session).
    _requests: dict[bytes, Message] = field(default_factory=dict)

    def install(self, server: TurnServer, monkeypatch: pytest.MonkeyPatch) -> None:
        handle_message, relay_opened = server.handle_message, server.relay_opened

        def recording_message(data: bytes, five_tuple: FiveTuple, now: float) -> list[Action]:
            request = _decoded(data)
            if (
                request is not None
                and request.method == Method.ALLOCATE
                and request.message_class is MessageClass.REQUEST
            ):
                self._requests[request.transaction_id] = request
            return self._observe(handle_message(data, five_tuple, now))

        def recording_opened(
            five_tuple: FiveTuple, relayed: Address, now: float, **kwargs: Any
        ) -> list[Action]:
            return self._observe(relay_opened(five_tuple, relayed, now, **kwargs))

        monkeypatch.setattr(server, "handle_message", recording_message)
        monkeypatch.setattr(server, "relay_opened", recording_opened)

    def _observe(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            reply = _decoded(action.data) if isinstance(action, SendToClient) else None
            request = None if reply is None else self._requests.pop(reply.transaction_id, None)
            if reply is not None and request is not None:
                self._record(request, reply)
        return actions

    def _record(self, request: Message, reply: Message) -> None:
        relayed = reply.get(XorRelayedAddress)
        address = None if relayed is None else (relayed.host, relayed.port)
        even_port, token = request.get(EvenPort), request.get(ReservationToken)
        given, code = reply.get(ReservationToken), error_code(reply)
        if code in (401, 438):
            return  # the client answers the challenge with a new transaction
        if even_port is not None and even_port.reserve_next and address and given:
            self.reserved.append((address, given.value))
        elif token is not None:
            self.redeemed.append((token.value, address or code or 0))


def _decoded(data: bytes) -> Message | None:
    if not is_stun_header(data):
        return None
    try:
        return decode_message(data)
    except StunDecodeError:
        return None


def relay_pairs(
    monkeypatch: pytest.MonkeyPatch, config: TurnConfig | None, *, tcp: bool = False
) -> tuple[UclientRun, ReservationRecorder]:
    recorder = ReservationRecorder()
    flags = ["-n", str(MESSAGES), "-l", str(LENGTH), "-m", str(PAIRS)]  # no -c: RTCP too
    flags += ["-t"] if tcp else []
    with echo_peer() as peer, threaded_turn_node(config) as running:
        recorder.install(running.node.server, monkeypatch)
        server = running.tcp if tcp else running.udp
        run = run_uclient(server, *flags, "-e", peer[0], "-r", str(peer[1]))
    return run, recorder


RANGE = TurnConfig(realm=REALM, relay_host="127.0.0.1", port_range=(50000, 50999))


@pytest.mark.parametrize(
    "config, tcp",
    [(None, False), (RANGE, False), (None, True)],
    ids=["kernel-ports", "port-range", "over-tcp"],
)
def test_uclient_rtp_rtcp_pairs_through_reservations(
    monkeypatch: pytest.MonkeyPatch, config: TurnConfig | None, tcp: bool
) -> None:
    run, recorder = relay_pairs(monkeypatch, config, tcp=tcp)
    report = (
        f"uclient exit {run.returncode}\n{run.output[-3000:]}\n"
        f"reserved {recorder.reserved}\nredeemed {recorder.redeemed}"
    )
    sessions = 2 * PAIRS  # each pair an RTP and an RTCP session
    assert_all_echoed(run, MESSAGES * sessions, report)
    # The node's view: each pair went through a reservation.
    assert len(recorder.reserved) >= PAIRS, report
    assert all(port % 2 == 0 for (_, port), _ in recorder.reserved), report
    next_port: dict[bytes, Address] = {t: (h, p + 1) for (h, p), t in recorder.reserved}
    assert len(recorder.redeemed) >= PAIRS, report
    assert all(next_port[token] == got for token, got in recorder.redeemed), report


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "over-tcp"])
async def test_uclient_rtp_rtcp_pairs_across_workers(tmp_path: Path, tcp: bool) -> None:
    """`trelay serve --workers 2`: each RTCP session allocates from another client port
    than its RTP one, which the kernel hands to either worker; when that is not the
    worker holding the reservation it hands the Allocate on (its token names the owner).
    With 4 pairs some cross (`crossed`, from the node's log; which ones is up to
    uclient's ports, so not asserted: tests/node/test_reservation_workers.py crosses
    deterministically); before, a crossing pair got 508 and uclient failed. Every
    session relays, nothing lost. Over TCP (`-t`) a crossing RTCP connection is proxied
    to the owner whole (`trelay.node.bind_proxy`)."""
    sessions = 8  # -m 8: 4 RTP/RTCP pairs
    kind = "tcp" if tcp else "udp"
    args = ("--workers", "2", f"--listen-{kind}", "127.0.0.1:0",
            "--user", f"{USERNAME}:{PASSWORD}", "--allow-loopback-peers")  # fmt: skip
    with echo_peer() as peer:
        async with running_workers(tmp_path, *args) as node:
            [server] = node.addresses(kind)
            flags = ("-n", str(MESSAGES), "-l", str(LENGTH), "-m", str(sessions),
                     "-e", peer[0], "-r", str(peer[1]), *(["-t"] if tcp else []))  # fmt: skip
            run = await trio.to_thread.run_sync(lambda: run_uclient(server, *flags))
            log = await node.log_when(lambda text: text.count("allocation created") >= sessions)
    report = (
        f"uclient exit {run.returncode}\n{run.output[-3000:]}\n--- trelay ---\n{log[-3000:]}\n"
        f"UDP pairs crossing workers: {'-' if tcp else crossed(log, 2)}, "
        f"TCP connections proxied: {log.count('connection proxied')}"
    )
    assert run.returncode == 0, report
    assert log.count("allocation created") >= sessions, report
    assert_all_echoed(run, MESSAGES * sessions, report, length=None)


_CREATED = re.compile(r"allocation created client=([\d.]+):(\d+) relayed=([\d.]+):(\d+)")


def crossed(log: str, workers: int) -> int:
    """How many reserved pairs' clients the kernel hands to different workers (the
    relayed ports N and N+1 of a pair; their client ports' workers by the program)."""
    client_of = {
        int(relayed): worker_for((host, int(port)), workers)
        for host, port, _, relayed in _CREATED.findall(log)
    }
    return sum(
        1
        for port, worker in client_of.items()
        if port % 2 == 0 and port + 1 in client_of and client_of[port + 1] != worker
    )
