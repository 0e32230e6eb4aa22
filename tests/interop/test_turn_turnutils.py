"""coturn's `turnutils_uclient` relays through trelay's TURN node without loss.

Each test starts a fresh trelay node (UDP and TCP listeners on loopback, loopback peers
allowed) and runs uclient against it as a subprocess:

- client to client (`-y`): uclient allocates two relays and each session sends to the
  other's relayed address, so every message crosses trelay twice (client -> relay ->
  relay -> client); over UDP and TCP, with channels (ChannelData) and with Send/Data
  indications (`-s`);
- against a `turnutils_peer` echo server: every message goes client -> relay -> peer
  and its echo comes back peer -> relay -> client.

"Without loss" is checked three ways: uclient's own closing totals (everything sent was
received, nothing lost or dropped), trelay's data-path counters (they grew by at least
what uclient sent and received), and the mechanism that carried it
(`TurnTrafficRecorder`): with channels, every ChannelBind succeeded and no indication
was needed; with `-s`, no channel was bound and each message was a Send indication in
and a Data indication out.

Sizes are modest (-n 50 at uclient's default 20 ms interval, -l 200) so that each run takes
a few seconds and loopback drops nothing; `-c` leaves out uclient's RTCP sessions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum

import pytest

from tests.helpers.turn_relay import threaded_turn_node
from tests.helpers.turnutils import (
    LENGTH,
    MESSAGES,
    NEEDS_UCLIENT_AND_PEER,
    TurnTrafficRecorder,
    UclientRun,
    assert_all_echoed,
    echo_peer,
    parse_summary,
    run_uclient,
)
from trelay.node.data_path import DataPathCounters
from trelay.turn.addressing import Address

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]


class Mechanism(Enum):
    CHANNELS = "channels"  # ChannelBind, then ChannelData both ways
    INDICATIONS = "indications"  # -s: Send indications in, Data indications out


@dataclass(frozen=True, slots=True)
class Relayed:
    """One uclient run against a fresh node, with what the node saw."""

    run: UclientRun
    before: DataPathCounters
    after: DataPathCounters
    recorder: TurnTrafficRecorder

    def report(self) -> str:
        """Everything needed to tell a trelay fault from a test fault, for assert messages."""
        binds = "\n".join(f"  {outcome}" for outcome in self.recorder.channel_binds)
        return (
            f"uclient exit {self.run.returncode}\n--- uclient output (tail) ---\n"
            f"{self.run.output[-3000:]}\n--- trelay ---\n"
            f"counters {self.after}\nChannelBind outcomes:\n{binds or '  none'}\n"
            f"Send indications {self.recorder.send_indications}, "
            f"Data indications {self.recorder.data_indications}"
        )


def relay_with_uclient(
    monkeypatch: pytest.MonkeyPatch,
    *,
    tcp: bool,
    mechanism: Mechanism,
    options: tuple[str, ...],
    peer: Address | None = None,
) -> Relayed:
    recorder = TurnTrafficRecorder()
    flags = ["-c", "-n", str(MESSAGES), "-l", str(LENGTH), *options]
    if tcp:
        flags.append("-t")
    if mechanism is Mechanism.INDICATIONS:
        flags.append("-s")
    if peer is not None:
        flags += ["-e", peer[0], "-r", str(peer[1])]
    with threaded_turn_node() as running:
        recorder.install(running.node.server, monkeypatch)
        before = copy.deepcopy(running.node.counters)
        run = run_uclient(running.tcp if tcp else running.udp, *flags)
    # The node's thread has stopped: its counters and the recorder are final.
    return Relayed(run, before, copy.deepcopy(running.node.counters), recorder)


def assert_relayed_without_loss(relayed: Relayed, sessions: int, mechanism: Mechanism) -> None:
    report = relayed.report()
    # uclient's view: everything it sent came back, nothing lost, nothing dropped.
    summary = assert_all_echoed(relayed.run, MESSAGES * sessions, report)
    # trelay's view: at least that much crossed its data path each way.
    before, after = relayed.before, relayed.after
    grew_out = after.client_to_peer_datagrams - before.client_to_peer_datagrams
    grew_in = after.peer_to_client_datagrams - before.peer_to_client_datagrams
    assert grew_out >= summary.sent_messages, report
    assert after.client_to_peer_bytes - before.client_to_peer_bytes >= summary.sent_bytes, report
    assert grew_in >= summary.received_messages, report
    assert after.peer_to_client_bytes - before.peer_to_client_bytes >= summary.received_bytes, (
        report
    )
    # ...and by the mechanism uclient was told to use.
    recorder = relayed.recorder
    if mechanism is Mechanism.CHANNELS:
        assert recorder.failed_channel_binds == [], report
        assert len({outcome.client for outcome in recorder.bound_channels}) == sessions, report
        assert recorder.send_indications == 0, report
        assert recorder.data_indications == 0, report
    else:
        assert recorder.channel_binds == [], report
        assert recorder.send_indications >= summary.sent_messages, report
        assert recorder.data_indications >= summary.received_messages, report


@pytest.mark.parametrize("mechanism", list(Mechanism), ids=lambda m: m.value)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_uclient_client_to_client(
    monkeypatch: pytest.MonkeyPatch, tcp: bool, mechanism: Mechanism
) -> None:
    # -y -m 1: one client pair, i.e. two sessions, each the other's peer.
    relayed = relay_with_uclient(
        monkeypatch, tcp=tcp, mechanism=mechanism, options=("-y", "-m", "1")
    )
    assert_relayed_without_loss(relayed, sessions=2, mechanism=mechanism)


@pytest.mark.parametrize("mechanism", list(Mechanism), ids=lambda m: m.value)
def test_uclient_to_turnutils_peer_over_udp(
    monkeypatch: pytest.MonkeyPatch, mechanism: Mechanism
) -> None:
    # -m 2: two sessions, each echoed by the same turnutils_peer.
    with echo_peer() as peer:
        relayed = relay_with_uclient(
            monkeypatch, tcp=False, mechanism=mechanism, options=("-m", "2"), peer=peer
        )
    assert_relayed_without_loss(relayed, sessions=2, mechanism=mechanism)


SAMPLE_OUTPUT = """\
0: : Total connect time is 0
4: : start_mclient: msz=2, tot_send_msgs=74, tot_recv_msgs=73, tot_send_bytes ~ 7400, \
tot_recv_bytes ~ 7300
4: : start_mclient: tot_send_msgs=100, tot_recv_msgs=99
4: : start_mclient: tot_send_bytes ~ 10000, tot_recv_bytes ~ 9900
4: : Total transmit time is 4
4: : Total lost packets 1 (1.000000%), total send dropped 2 (2.000000%)
4: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
"""


def test_parse_summary_reads_the_closing_totals_not_the_progress_lines() -> None:
    summary = parse_summary(SAMPLE_OUTPUT)
    assert summary is not None
    assert (summary.sent_messages, summary.received_messages) == (100, 99)
    assert (summary.sent_bytes, summary.received_bytes) == (10000, 9900)
    assert (summary.lost_packets, summary.send_dropped) == (1, 2)


def test_parse_summary_is_none_when_uclient_gave_up() -> None:
    assert parse_summary("0: : channel bind: error 400 (Channel number out of range)\n") is None
