"""The data plane's idle wait (`trelay.node.idle_wait`): while trio idles, the node waits in
the data plane's epoll set. Checked on real loopback sockets: the installed trio still
offers what it reads; readers run while trio sleeps; trio's timers, threads, other
sockets and the tasks a pass wakes all run as promptly as without it; an exception in a
pass reaches the data plane's task; one claim per run, and none under a mock clock."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import peer, start_node, udp_client
from trelay.node import idle_wait
from trelay.node.data_plane import DataPlane
from trelay.node.datagram_batch import BATCH_SIZE, DatagramBatch
from trelay.node.idle_wait import _trio_internals

TIMEOUT = 10.0


def reader_of(
    sock: socket.socket, seen: list[bytes], then: Callable[[], object] = list
) -> DatagramBatch:
    """Reads everything queued on `sock` into `seen` (whatever the limit), then calls
    `then`."""

    def read(limit: int = BATCH_SIZE) -> int:
        count = 0
        while True:
            try:
                seen.append(sock.recv(2048))
            except BlockingIOError:
                then()
                return count
            count += 1

    return read


async def test_the_installed_trio_offers_what_the_idle_wait_reads() -> None:
    # Fails when a trio upgrade moves the internals: the fast path must not go silently.
    assert _trio_internals() is not None
    async with trio.open_nursery() as nursery:
        plane = DataPlane()
        await nursery.start(plane.run)
        assert plane.waits_idle
        nursery.cancel_scope.cancel()


async def test_a_node_relays_from_the_idle_wait() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        assert local.node.data_plane.waits_idle
        async with udp_client(local.udp) as client, peer() as far:
            relayed = await client.allocate()
            await client.channel_bind(0x4000, far.address)
            for _ in range(20):
                await client.send_channel_data(0x4000, b"out")
                assert await far.receive() == (b"out", relayed)
                await far.send(relayed, b"back")
                assert await client.receive_data() == (0x4000, b"back")
        nursery.cancel_scope.cancel()


async def test_timers_threads_and_other_sockets_run_while_the_plane_waits(
    sockets: Callable[[], socket.socket],
) -> None:
    async with trio.open_nursery() as nursery:
        plane = DataPlane()
        watched, sender = sockets(), sockets()
        seen: list[bytes] = []
        got = trio.Event()
        plane.add(watched, reader_of(watched, seen, lambda: seen and got.set()))
        await nursery.start(plane.run)
        assert plane.waits_idle
        with trio.fail_after(TIMEOUT):
            began = trio.current_time()
            await trio.sleep(0.05)  # a deadline: the idle wait returns for it
            assert trio.current_time() - began >= 0.05
            assert await trio.to_thread.run_sync(_nap) == 7
            other = sockets()  # a socket trio waits on, not the plane
            sender.sendto(b"to trio", other.getsockname())
            await trio.lowlevel.wait_readable(other)
            assert other.recv(100) == b"to trio"
            sender.sendto(b"to the plane", watched.getsockname())
            await got.wait()
            assert seen == [b"to the plane"]
            await trio.testing.wait_all_tasks_blocked()  # trio's own idle check still works
        nursery.cancel_scope.cancel()


async def test_a_task_woken_by_a_pass_runs_at_once(sockets: Callable[[], socket.socket]) -> None:
    # The pass runs in the hook, outside any task; the task it wakes must not wait for
    # the next deadline (here the fail_after's) or datagram.
    async with trio.open_nursery() as nursery:
        plane = DataPlane()
        watched, sender = sockets(), sockets()
        arrived = trio.Event()
        plane.add(watched, reader_of(watched, [], arrived.set))
        await nursery.start(plane.run)
        assert plane.waits_idle
        await trio.testing.wait_all_tasks_blocked()
        sender.sendto(b"wake", watched.getsockname())
        with trio.move_on_after(TIMEOUT) as bound:
            await arrived.wait()
        # Woken by the pass, not by the bound's deadline ending the idle wait.
        assert arrived.is_set() and not bound.cancel_called
        nursery.cancel_scope.cancel()


async def test_an_exception_in_a_pass_ends_the_plane_with_it(
    sockets: Callable[[], socket.socket],
) -> None:
    class Broken(Exception):
        pass

    def broken(limit: int = BATCH_SIZE) -> int:
        raise Broken

    watched, sender = sockets(), sockets()
    plane = DataPlane()
    plane.add(watched, broken)
    with pytest.raises(ExceptionGroup) as raised, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            assert plane.waits_idle
            sender.sendto(b"breaks the reader", watched.getsockname())
    assert raised.group_contains(Broken)
    assert not plane.waits_idle and watched.fileno() == -1  # given back, sockets closed


async def test_one_claim_per_run_and_the_next_plane_takes_it_over(
    sockets: Callable[[], socket.socket],
) -> None:
    async with trio.open_nursery() as nursery:
        first, second = DataPlane(), DataPlane()
        watched, sender = sockets(), sockets()
        seen: list[bytes] = []
        got = trio.Event()
        second.add(watched, reader_of(watched, seen, lambda: seen and got.set()))
        first_scope = trio.CancelScope()
        nursery.start_soon(_run_in, first_scope, first)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(second.run)
        assert first.waits_idle and not second.waits_idle
        # The second plane's task waits through trio, whose epoll is in the first's set.
        sender.sendto(b"to the second", watched.getsockname())
        with trio.fail_after(TIMEOUT):
            await got.wait()
        assert seen == [b"to the second"]
        first_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        third = DataPlane()
        await nursery.start(third.run)
        assert third.waits_idle
        nursery.cancel_scope.cancel()


def _nap(limit: int = BATCH_SIZE) -> int:
    time.sleep(0.01)
    return 7


async def _run_in(scope: trio.CancelScope, plane: DataPlane) -> None:
    with scope:
        await plane.run()


def test_no_claim_under_a_mock_clock() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            plane = DataPlane()
            await nursery.start(plane.run)
            assert not plane.waits_idle
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_trio_without_the_internals_is_named_once_and_served_through_the_task(
    sockets: Callable[[], socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As a trio version whose I/O manager is not the epoll one this module reads.
    monkeypatch.setattr(idle_wait, "_warned", set())
    monkeypatch.setattr(idle_wait, "select", SimpleNamespace(epoll=type("Other", (), {})))
    watched, sender = sockets(), sockets()
    seen: list[bytes] = []
    got = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            plane = DataPlane()
            plane.add(watched, reader_of(watched, seen, lambda: seen and got.set()))
            await nursery.start(plane.run)
            assert not plane.waits_idle
        sender.sendto(b"through the task", watched.getsockname())
        with trio.fail_after(TIMEOUT):
            await got.wait()
        nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if "lacks what the idle wait reads" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


async def test_a_deadline_past_by_the_time_of_the_poll_never_blocks(
    sockets: Callable[[], socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # epoll.poll takes a timeout of -1 ms or less as "block until an event": a wait whose
    # end passed between computing it and polling (here a clock that moves 2 ms a read,
    # as a thread holding the GIL would make it) must poll with 0, not sleep through
    # every trio deadline until a datagram comes. The rescue datagram only comes if it did.
    async with trio.open_nursery() as nursery:
        plane = DataPlane()
        watched, sender = sockets(), sockets()
        plane.add(watched, reader_of(watched, []))
        await nursery.start(plane.run)
        idle = plane._idle
        assert idle is not None
        readings = itertools.count()
        monkeypatch.setattr(
            idle_wait, "time", SimpleNamespace(monotonic=lambda: 0.002 * next(readings))
        )
        rescued = threading.Event()

        def rescue() -> None:
            rescued.set()
            sender.sendto(b"rescue", watched.getsockname())

        timer = threading.Timer(TIMEOUT, rescue)
        timer.start()
        try:
            idle.before_io_wait(0.001)  # over before the first poll
        finally:
            timer.cancel()
        assert not rescued.is_set()
        nursery.cancel_scope.cancel()
