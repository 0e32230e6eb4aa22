"""coturn's `turnutils_uclient` and `turnutils_peer` as real TURN clients of a trelay node.

Owns three things the interop tests need around those binaries:

- `run_uclient`: run `turnutils_uclient` against a server address with a hard timeout
  (the process is killed when it runs over) and parse its closing summary
  (`UclientSummary`: messages and bytes sent and received, lost packets, send drops);
- `echo_peer`: a `turnutils_peer` (a UDP echo server) on 127.0.0.1 and a free port,
  probed until it echoes, stopped on exit;
- `TurnTrafficRecorder`: wraps a live `TurnServer`'s `handle_message` and
  `peer_datagram` to record which TURN mechanism carried the data: ChannelBind
  requests (with their channel numbers and outcomes), Send indications from clients
  and Data indications to clients. ChannelData never reaches either method (the
  runtime relays it itself), so "channels were used" shows as successful ChannelBinds
  and no indications at all.

The recorder's counts are written by the node's trio thread; read them once the node
has stopped (after its `with` block), when that thread has been joined.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.helpers.turn_relay import PASSWORD, USERNAME
from trelay.stun.attributes import ChannelNumber
from trelay.stun.codes import MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import decode_message, decode_message_type, is_stun_header
from trelay.turn.actions import Action, SendToClient
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.allocation import Allocation
from trelay.turn.server import TurnServer

UCLIENT = shutil.which("turnutils_uclient")
PEER = shutil.which("turnutils_peer")
UCLIENT_TIMEOUT = 60.0
PEER_READY_ATTEMPTS = 50
PEER_PROBE_TIMEOUT = 0.2

# Every interop test that runs uclient against trelay (with a turnutils_peer echo server or
# client to client) is skipped, not failed, where coturn's tools are not installed.
NEEDS_UCLIENT_AND_PEER = pytest.mark.skipif(
    UCLIENT is None or PEER is None,
    reason="coturn's turnutils_uclient and turnutils_peer are needed (apt-get install coturn)",
)
# The size of the interop runs' sessions unless a test says otherwise: at uclient's default
# 20 ms interval a run takes a few seconds and loopback drops nothing.
MESSAGES = 50  # -n: messages per session
LENGTH = 200  # -l: bytes per message

# The closing lines of a uclient run (the per-second progress lines carry "msz=N, " after
# "start_mclient: " and so do not match), e.g.
#   5: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100
#   5: : start_mclient: tot_send_bytes ~ 10000, tot_recv_bytes ~ 10000
#   5: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
_MESSAGES = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_BYTES = re.compile(r"start_mclient: tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)")
_LOST = re.compile(r"Total lost packets (\d+) \([^)]*\), total send dropped (\d+)")


@dataclass(frozen=True, slots=True)
class UclientSummary:
    """The totals uclient prints when it is done, over all its client sessions."""

    sent_messages: int
    received_messages: int
    sent_bytes: int
    received_bytes: int
    lost_packets: int
    send_dropped: int


@dataclass(frozen=True, slots=True)
class UclientRun:
    returncode: int
    output: str
    summary: UclientSummary | None  # None when uclient gave up before its summary


def _last(pattern: re.Pattern[str], output: str) -> tuple[int, int] | None:
    found = pattern.findall(output)
    if not found:
        return None
    first, second = found[-1]
    return int(first), int(second)


def parse_summary(output: str) -> UclientSummary | None:
    """The closing totals of a uclient run, or None when any of its lines is missing."""
    messages = _last(_MESSAGES, output)
    sizes = _last(_BYTES, output)
    lost = _last(_LOST, output)
    if messages is None or sizes is None or lost is None:
        return None
    return UclientSummary(*messages, *sizes, *lost)


def assert_all_echoed(
    run: UclientRun, messages: int, report: str, *, length: int | None = LENGTH
) -> UclientSummary:
    """uclient exited 0 and its closing totals say: `messages` sent in all, every one
    received back (with `length`: `length` bytes each, both ways), none lost and none
    dropped on send. `report` is the assertions' message; the summary is returned."""
    summary = run.summary
    assert run.returncode == 0, report
    assert summary is not None, report
    assert summary.sent_messages == messages, report
    assert summary.received_messages == summary.sent_messages, report
    if length is not None:
        assert summary.received_bytes == summary.sent_bytes == messages * length, report
    assert summary.lost_packets == summary.send_dropped == 0, report
    return summary


def uclient_command(server: Address, *options: str) -> list[str]:
    assert UCLIENT is not None
    host, port = server
    return [UCLIENT, "-u", USERNAME, "-w", PASSWORD, "-p", str(port), *options, host]


def run_uclient(server: Address, *options: str, timeout: float = UCLIENT_TIMEOUT) -> UclientRun:
    """Run uclient against `server` with `options`; kill it and fail if it runs over."""
    command = uclient_command(server, *options)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"{' '.join(command)} ran over {timeout} s:\n{output}")
    return UclientRun(process.returncode, output, parse_summary(output))


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _echoes(peer: Address) -> bool:
    """One probe datagram; True when the same bytes come back from `peer`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(PEER_PROBE_TIMEOUT)
        probe.bind((peer[0], 0))
        try:
            probe.sendto(b"trelay peer probe", peer)
            data, source = probe.recvfrom(2048)
        except OSError:  # timeout, or an ICMP error while the peer is not bound yet
            return False
        return data == b"trelay peer probe" and source == peer


@contextmanager
def echo_peer(host: str = "127.0.0.1") -> Iterator[Address]:
    """A running `turnutils_peer` (UDP echo) at (host, free port); stopped on exit."""
    assert PEER is not None
    peer = (host, _free_udp_port(host))
    with subprocess.Popen(
        [PEER, "-L", host, "-p", str(peer[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            ready = False
            for _ in range(PEER_READY_ATTEMPTS):
                if process.poll() is not None:  # e.g. the port was taken meanwhile
                    output, _ = process.communicate()
                    pytest.fail(f"turnutils_peer on {peer} exited {process.returncode}:\n{output}")
                ready = _echoes(peer)
                if ready:
                    break
            if not ready:
                pytest.fail(f"turnutils_peer on {peer} does not echo")
            yield peer
        finally:
            process.kill()
            process.communicate()


@dataclass(frozen=True, slots=True)
class ChannelBindOutcome:
    """One ChannelBind request and what trelay answered (error None for success)."""

    client: Address
    channel: int | None
    error: int | None
    reason: str = ""

    def __str__(self) -> str:
        channel = "no CHANNEL-NUMBER" if self.channel is None else f"channel 0x{self.channel:04X}"
        outcome = "success" if self.error is None else f"error {self.error} {self.reason!r}"
        return f"ChannelBind from {self.client[0]}:{self.client[1]} {channel}: {outcome}"


@dataclass
class TurnTrafficRecorder:
    """Records, per TURN mechanism, what a live `TurnServer` handled."""

    channel_binds: list[ChannelBindOutcome] = field(default_factory=list)
    send_indications: int = 0
    data_indications: int = 0

    def install(self, server: TurnServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap the server's two entry points; monkeypatch undoes it after the test."""
        handle_message = server.handle_message
        peer_datagram = server.peer_datagram

        def recording_handle_message(
            data: bytes, five_tuple: FiveTuple, now: float
        ) -> list[Action]:
            actions = handle_message(data, five_tuple, now)
            self._observe(data, five_tuple, actions)
            return actions

        def recording_peer_datagram(
            allocation: Allocation, peer: Address, data: bytes
        ) -> bytes | None:
            indication = peer_datagram(allocation, peer, data)
            if indication is not None:
                self.data_indications += 1
            return indication

        monkeypatch.setattr(server, "handle_message", recording_handle_message)
        monkeypatch.setattr(server, "peer_datagram", recording_peer_datagram)

    @property
    def bound_channels(self) -> list[ChannelBindOutcome]:
        return [outcome for outcome in self.channel_binds if outcome.error is None]

    @property
    def failed_channel_binds(self) -> list[ChannelBindOutcome]:
        return [outcome for outcome in self.channel_binds if outcome.error is not None]

    def _observe(self, data: bytes, five_tuple: FiveTuple, actions: list[Action]) -> None:
        if not is_stun_header(data):
            return
        method, message_class = decode_message_type(int.from_bytes(data[:2], "big"))
        if method == Method.SEND and message_class is MessageClass.INDICATION:
            self.send_indications += 1
        elif method == Method.CHANNEL_BIND and message_class is MessageClass.REQUEST:
            self._observe_channel_bind(data, five_tuple, actions)

    def _observe_channel_bind(
        self, data: bytes, five_tuple: FiveTuple, actions: list[Action]
    ) -> None:
        replies = [
            action.data
            for action in actions
            if isinstance(action, SendToClient) and action.five_tuple == five_tuple
        ]
        try:
            request = decode_message(data)
            reply = decode_message(replies[0]) if replies else None
        except StunDecodeError:
            return
        if reply is None:
            return
        number = request.get(ChannelNumber)
        channel = None if number is None else number.value
        if reply.message_class is MessageClass.SUCCESS:
            outcome = ChannelBindOutcome(five_tuple.client, channel, None)
        else:
            error = reply.get(ErrorCodeAttribute)
            # An error response without ERROR-CODE would itself be a bug: record it as 0.
            code, reason = (0, "no ERROR-CODE") if error is None else (error.code, error.reason)
            outcome = ChannelBindOutcome(five_tuple.client, channel, code, reason)
        self.channel_binds.append(outcome)
