"""The data plane (`trelay.node.data_plane.DataPlane`): one task drains every registered
socket through one epoll set, on real loopback sockets. Readers are called when their
socket is readable, again while a full batch says more is queued, for one datagram
while their socket is lone (and for a batch again once a backlog shows), never after
`discard`; a socket closed under the plane is forgotten; cancelling the task closes what
is still registered. On a node, allocations start no task of their own and ending one
takes its sockets out of the plane at once."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import peer, start_node, udp_client
from trelay.node import data_plane
from trelay.node.data_plane import LONE_STREAK, DataPlane
from trelay.node.datagram_batch import BATCH_SIZE

TIMEOUT = 10.0


class Reader:
    """Drains up to `per_call` datagrams per call (fewer if the plane asks for fewer);
    says "full" while some may be left. `limits`: what the plane asked for, call by call."""

    def __init__(self, sock: socket.socket, per_call: int = BATCH_SIZE) -> None:
        self.sock = sock
        self.per_call = per_call
        self.read: list[bytes] = []
        self.limits: list[int] = []
        self._more = trio.Event()

    @property
    def calls(self) -> int:
        return len(self.limits)

    def __call__(self, limit: int = BATCH_SIZE) -> int:
        self.limits.append(limit)
        for count in range(min(self.per_call, limit)):
            try:
                self.read.append(self.sock.recv(2048))
            except BlockingIOError:
                return count
            self._more.set()
        return limit  # as a full batch does: more may be queued

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.read) < count:
                await self._more.wait()
                self._more = trio.Event()


def send(sock: socket.socket, *payloads: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, sock.getsockname())


async def test_one_task_drains_every_ready_socket(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    first, second = Reader(sockets()), Reader(sockets())
    plane.add(first.sock, first)
    plane.add(second.sock, second)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        send(first.sock, b"a1", b"a2")
        send(second.sock, b"b1")
        await first.wait_for(2)
        await second.wait_for(1)
        assert (first.read, second.read) == ([b"a1", b"a2"], [b"b1"])
        nursery.cancel_scope.cancel()


async def test_a_full_batch_is_followed_by_another_until_the_socket_is_empty(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    reader = Reader(sockets(), per_call=1)  # every call a "full batch" of one
    plane.add(reader.sock, reader)
    send(reader.sock, b"1", b"2", b"3")  # queued before the plane runs: no new wakeup
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        await reader.wait_for(3)
        assert reader.read == [b"1", b"2", b"3"]
        nursery.cancel_scope.cancel()


class Clock:
    """`time.monotonic` for the plane: still unless moved, or `step` seconds a reading."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(data_plane, "time", clock)
    return clock


async def test_a_lone_socket_is_read_once_a_pass_and_a_backlog_is_drained_as_a_batch(
    sockets: Callable[[], socket.socket], clock: Clock
) -> None:
    plane = DataPlane()
    reader = Reader(sockets())
    plane.add(reader.sock, reader)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        send(reader.sock, b"1")
        await reader.wait_for(1)
        assert reader.limits == [BATCH_SIZE]  # one datagram, then EAGAIN: lone
        clock.now += 1.0  # the next datagram comes a while later: it is read alone
        send(reader.sock, b"2")
        await reader.wait_for(2)
        assert reader.limits[1:] == [1]
        clock.now += 1.0  # three at once: one read, then the socket is back at once
        send(reader.sock, b"3", b"4", b"5")
        await reader.wait_for(5)
        assert reader.limits[2:] == [1, BATCH_SIZE]
        send(reader.sock, b"6")  # no longer lone: a batch, which finds one
        await reader.wait_for(6)
        assert reader.limits[4:] == [BATCH_SIZE]
        assert reader.read == [str(n).encode() for n in range(1, 7)]
        nursery.cancel_scope.cancel()


async def test_a_backlog_the_gap_does_not_show_costs_at_most_a_streak_of_single_reads(
    sockets: Callable[[], socket.socket], clock: Clock
) -> None:
    plane = DataPlane()
    reader = Reader(sockets())
    plane.add(reader.sock, reader)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        send(reader.sock, b"first")
        await reader.wait_for(1)
        clock.step = 1.0  # every pass a second after the last: never "back at once"
        queued = [b"%d" % n for n in range(LONE_STREAK + 4)]
        send(reader.sock, *queued)
        await reader.wait_for(1 + len(queued))
        assert reader.limits == [BATCH_SIZE] + [1] * LONE_STREAK + [BATCH_SIZE]
        assert reader.read == [b"first", *queued]
        nursery.cancel_scope.cancel()


async def test_a_discarded_socket_is_never_read_again_and_others_go_on(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    gone, kept = Reader(sockets()), Reader(sockets())
    plane.add(gone.sock, gone)
    plane.add(kept.sock, kept)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        plane.discard(gone.sock)
        assert len(plane) == 1
        send(gone.sock, b"unread")
        send(kept.sock, b"read")
        await kept.wait_for(1)
        # The plane ran a pass after the datagram to `gone` arrived, and skipped it.
        assert gone.calls == 0
        assert gone.sock.recv(2048) == b"unread"
        nursery.cancel_scope.cancel()


async def test_a_reader_replaced_by_a_second_add_is_not_called(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    sock = sockets()
    old, new = Reader(sock), Reader(sock)
    plane.add(sock, old)
    plane.add(sock, new)  # RFC 8016 mobility: the same socket, a new reader
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        send(sock, b"moved")
        await new.wait_for(1)
        assert (old.calls, new.read) == (0, [b"moved"])
        nursery.cancel_scope.cancel()


async def test_a_socket_closed_under_the_plane_is_forgotten(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    closed, kept = sockets(), Reader(sockets())

    def reader_of_closed(limit: int = BATCH_SIZE) -> int:
        closed.close()  # as if closed elsewhere without `discard`
        return Reader(closed)()  # recv on a closed socket: EBADF

    plane.add(closed, reader_of_closed)
    plane.add(kept.sock, kept)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        send(closed, b"wakes it")
        send(kept.sock, b"still served")
        await kept.wait_for(1)
        with trio.fail_after(TIMEOUT):
            await trio.testing.wait_all_tasks_blocked()  # the plane waits again
        assert len(plane) == 1
        nursery.cancel_scope.cancel()


async def test_cancelling_the_plane_closes_what_is_registered(
    sockets: Callable[[], socket.socket],
) -> None:
    plane = DataPlane()
    registered, discarded = sockets(), sockets()
    plane.add(registered, Reader(registered))
    plane.add(discarded, Reader(discarded))
    plane.discard(discarded)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        assert plane.running
        nursery.cancel_scope.cancel()
    assert not plane.running
    assert registered.fileno() == -1
    assert discarded.fileno() != -1  # the caller's to close


async def test_allocations_start_no_task_and_leave_the_plane_when_they_end() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as first, peer() as far:
            await first.allocate()
            tasks = len(nursery.child_tasks)
            # The UDP listener and the first relay socket.
            assert len(local.node.data_plane) == 2
            async with udp_client(local.udp) as second, udp_client(local.udp) as third:
                for client in (second, third):
                    relayed = await client.allocate()
                    await client.channel_bind(0x4000, far.address)
                    await client.send_channel_data(0x4000, b"connects a channel socket")
                    assert await far.receive() == (b"connects a channel socket", relayed)
                    await far.send(relayed, b"back")
                    assert await client.receive_data() == (0x4000, b"back")
                assert len(nursery.child_tasks) == tasks  # no task per allocation
                assert len(local.node.data_plane) == 2 + 2 * 2  # relay + channel sockets
                await second.refresh(0)
                assert len(local.node.data_plane) == 2 + 2  # out at once, before any await
                await third.refresh(0)
            assert len(local.node.data_plane) == 2
        nursery.cancel_scope.cancel()
