"""GSO sends on real loopback sockets (`trelay.node.gso.SegmentingSocket`): a run leaves
in one `sendmsg` and arrives as its datagrams, in order, cut at the segment size (the last
one shorter); a socket where GSO fails falls back once, counts it, and resends the whole
run one by one, so nothing is lost."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from trelay.node import gso
from trelay.node.gso import GsoCounters, SegmentingSocket

pytestmark = pytest.mark.skipif(not gso.GSO_ENABLED, reason="Linux UDP GSO only")

SO_NO_CHECK = 11  # <asm-generic/socket.h>: no UDP checksum, with which GSO sends fail


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with sock:
        yield sock


def received(sock: socket.socket, count: int) -> list[bytes]:
    """`count` datagrams from `sock` (each waited for at most 5 s), then none more."""
    datagrams: list[bytes] = []
    for _ in range(count):
        ready, _, _ = select.select([sock], [], [], 5.0)
        assert ready, f"only {len(datagrams)} of {count} datagrams arrived"
        datagrams.append(sock.recv(65535))
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65535)
    return datagrams


def sender(*, no_check: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if no_check:
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    return sock


def test_a_run_of_buffers_leaves_in_one_send_and_arrives_as_its_datagrams(
    receiver: socket.socket,
) -> None:
    payloads = [bytes([index]) * 100 for index in range(5)]
    counters = GsoCounters()
    with sender() as sock:
        out = SegmentingSocket(sock, counters)
        assert out.send_run(payloads, 100, 5, receiver.getsockname()) == 0
    assert received(receiver, 5) == payloads
    assert (counters.runs, counters.segments, counters.fallbacks) == (1, 5, 0)


def test_one_buffer_is_cut_at_the_segment_size_and_the_last_may_be_shorter(
    receiver: socket.socket,
) -> None:
    frames = b"a" * 40 + b"b" * 40 + b"c" * 13
    counters = GsoCounters()
    with sender() as sock:
        sock.connect(receiver.getsockname())
        out = SegmentingSocket(sock, counters)
        assert out.send_run([memoryview(frames)], 40, 3, None) == 0  # connected: no address
    assert received(receiver, 3) == [b"a" * 40, b"b" * 40, b"c" * 13]
    assert (counters.runs, counters.segments) == (1, 3)


def test_a_socket_where_gso_fails_falls_back_once_and_resends_everything(
    receiver: socket.socket,
) -> None:
    counters = GsoCounters()
    with sender(no_check=True) as sock:  # the kernel refuses UDP_SEGMENT: EINVAL
        out = SegmentingSocket(sock, counters)
        first = [b"1" * 64, b"2" * 64, b"3" * 64]
        assert out.send_run(first, 64, 3, receiver.getsockname()) == 0
        assert not out.segmenting
        assert received(receiver, 3) == first
        second = [memoryview(b"x" * 30 + b"y" * 30)]
        assert out.send_run(second, 30, 2, receiver.getsockname()) == 0
        assert received(receiver, 2) == [b"x" * 30, b"y" * 30]
    # Counted once, for the socket; nothing went out as a GSO run.
    assert (counters.runs, counters.segments, counters.fallbacks) == (0, 0, 1)


def test_gso_turned_off_sends_one_by_one_and_counts_no_fallback(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gso, "GSO_ENABLED", False)  # as TRELAY_GSO=0 does at import
    counters = GsoCounters()
    with sender() as sock:
        out = SegmentingSocket(sock, counters)
        assert out.send_run([b"p" * 10, b"q" * 10], 10, 2, receiver.getsockname()) == 0
    assert received(receiver, 2) == [b"p" * 10, b"q" * 10]
    assert (counters.runs, counters.fallbacks) == (0, 0)


def test_a_failing_destination_counts_each_datagram_as_a_plain_send_would(
    receiver: socket.socket,
) -> None:
    counters = GsoCounters()
    with sender() as sock:
        sock.connect(receiver.getsockname())
        receiver.close()  # the port is closed: ICMP port unreachable comes back
        out = SegmentingSocket(sock, counters)
        sock.send(b"provokes the ICMP error")
        # Plain sends to a closed port alternate: each one that goes out brings an ICMP
        # error back, which fails the next send (and that one goes nowhere). The run's
        # sendmsg takes the pending error (GSO stays on), its resends then go out as
        # plain sends would: the first, then the second fails.
        assert out.send_run([b"a" * 8, b"b" * 8], 8, 2, None) == 1
        assert out.segmenting
    assert counters.fallbacks == 0


def test_the_fallback_gathers_a_datagram_from_the_buffers_it_spans(
    receiver: socket.socket,
) -> None:
    # Headers and payloads in buffers of their own, as a GRO run goes out: each
    # datagram sent alone is a header and its payload together.
    counters = GsoCounters()
    with sender(no_check=True) as sock:
        out = SegmentingSocket(sock, counters)
        buffers = [b"H1", b"p" * 6, b"H2", b"q" * 6, b"H3", b"rr"]
        assert out.send_run(buffers, 8, 3, receiver.getsockname()) == 0
    assert received(receiver, 3) == [b"H1pppppp", b"H2qqqqqq", b"H3rr"]
    assert counters.fallbacks == 1


def test_a_gso_run_arrives_coalesced_on_a_gro_socket_with_its_segment_size(
    receiver: socket.socket,
) -> None:
    assert gso.set_gro(receiver, True)
    with sender() as sock:
        sock.sendmsg([b"a" * 50 + b"b" * 50 + b"c" * 20], gso.segment_control(50), 0,
                     receiver.getsockname())  # fmt: skip
    ready, _, _ = select.select([receiver], [], [], 5.0)
    assert ready
    buffer = bytearray(65535)
    size, ancillary, _, _ = receiver.recvmsg_into([buffer], gso.GRO_CONTROL_SPACE)
    assert (size, gso.gro_segment(ancillary)) == (120, 50)
    assert gso.set_gro(receiver, False)
    assert gso.gro_segment([]) == 0


def test_gro_goes_on_when_busy_off_when_quiet_and_parsing_ends_once_drained(
    receiver: socket.socket,
) -> None:
    state = gso.GroState(receiver, allowed=True)
    state.after_batch(gso.GRO_BUSY - 1, 0, emptied=True)
    assert not state.on and not state.parse
    state.after_batch(gso.GRO_BUSY, 0, emptied=True)
    assert state.on and state.parse
    assert receiver.getsockopt(gso.SOL_UDP, gso.UDP_GRO) == 1
    for _ in range(gso.GRO_QUIET_BATCHES - 1):
        state.after_batch(1, 0, emptied=True)
    state.after_batch(gso.GRO_QUIET, 3, emptied=True)  # a busy batch starts the count again
    for _ in range(gso.GRO_QUIET_BATCHES):
        state.after_batch(1, 0, emptied=True)
    assert not state.on and state.parse  # off in the kernel; the queue may hold runs
    assert receiver.getsockopt(gso.SOL_UDP, gso.UDP_GRO) == 0
    state.after_batch(64, 0, emptied=False)
    assert state.parse  # not drained yet
    state.after_batch(1, 0, emptied=True)
    assert not state.parse
    state.after_batch(gso.GRO_BUSY, 0, emptied=True)
    assert state.on  # quiet is no failure: busy again, on again at once


def test_gro_that_coalesces_nothing_goes_off_and_waits_longer_each_time(
    receiver: socket.socket,
) -> None:
    state = gso.GroState(receiver, allowed=True)
    for waited in (gso.GRO_RETRY_BATCHES, 2 * gso.GRO_RETRY_BATCHES):
        state.after_batch(gso.GRO_BUSY, 0, emptied=True)
        assert state.on
        for _ in range(gso.GRO_IDLE_BATCHES - 1):
            state.after_batch(gso.GRO_BUSY, 0, emptied=True)
        state.after_batch(gso.GRO_BUSY, 7, emptied=True)  # coalescing: worth keeping
        for _ in range(gso.GRO_IDLE_BATCHES):
            state.after_batch(gso.GRO_BUSY, 0, emptied=True)
        assert not state.on
        state.after_batch(1, 0, emptied=True)  # drained
        for _ in range(waited):
            state.after_batch(gso.GRO_BUSY, 0, emptied=True)
            assert not state.on


def test_gro_not_allowed_stays_off_and_a_move_turns_it_off(receiver: socket.socket) -> None:
    refused = gso.GroState(receiver, allowed=False)
    refused.after_batch(gso.GRO_BUSY * 4, 0, emptied=True)
    assert not refused.on
    state = gso.GroState(receiver, allowed=True)
    state.after_batch(gso.GRO_BUSY, 0, emptied=True)
    assert state.on
    state.allow(False)  # the client moved to a transport whose reader cannot split runs
    assert not state.on and state.parse
    assert receiver.getsockopt(gso.SOL_UDP, gso.UDP_GRO) == 0


def test_a_run_too_large_for_the_path_stops_gso_only_for_segments_that_large(
    receiver: socket.socket,
) -> None:
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    counters = GsoCounters()
    with sender() as sock:
        out = SegmentingSocket(sock, counters)
        large = [b"L" * 40_000, b"M" * 40_000]  # 80,000 bytes: past a datagram's 64 KiB
        assert out.send_run(large, 40_000, 2, receiver.getsockname()) == 0  # EMSGSIZE
        assert received(receiver, 2) == large  # resent one by one
        receiver.setblocking(True)
        assert out.send_run(large, 40_000, 2, receiver.getsockname()) == 0  # not tried again
        assert received(receiver, 2) == large
        receiver.setblocking(True)
        small = [b"s" * 100, b"t" * 100]
        assert out.send_run(small, 100, 2, receiver.getsockname()) == 0  # still GSO
        assert received(receiver, 2) == small
    assert out.segmenting and out.max_segment == 39_999
    assert (counters.runs, counters.segments, counters.fallbacks) == (1, 2, 1)
