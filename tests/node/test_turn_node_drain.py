"""Graceful drain of a real TurnNode (design §4): `TurnNode.drain(timeout)` tells the core
to start draining (`TurnServer.start_draining`), so new Allocates get 508 (or 300 to an
alternate server) at once while existing allocations keep refreshing and relaying; the
drain ends as soon as the last allocation is gone, at the timeout, or when
`end_drain_now` is called (an operator's second signal), and says which (`DrainEnd`).
"""

from __future__ import annotations

import trio
import trio.testing

from tests.helpers.turn_client import TurnError, peer, start_node, udp_client
from trelay.node.turn_node import DRAIN_PROGRESS_SECONDS, DrainEnd
from trelay.stun.codes import ErrorCode
from trelay.turn.actions import EndReason
from trelay.turn.addressing import ClientTransport


async def test_drain_refuses_newcomers_and_keeps_existing_allocations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        node = local.node
        async with udp_client(local.udp) as old, udp_client(local.udp) as newcomer, peer() as far:
            relayed = await old.allocate()
            await old.channel_bind(0x4000, far.address)
            drained = trio.Event()

            ends: list[DrainEnd] = []

            async def drain() -> None:
                ends.append(await node.drain(3600))
                drained.set()

            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert node.server.draining
            try:
                await newcomer.allocate()
            except TurnError as error:
                assert error.code == ErrorCode.INSUFFICIENT_CAPACITY
            else:
                raise AssertionError("a draining node allocated")
            assert await old.refresh(600) == 600
            await old.send_channel_data(0x4000, b"still relayed")
            assert await far.receive() == (b"still relayed", relayed)
            assert not drained.is_set()
            # The last allocation ends: the drain is over long before its grace period.
            started = trio.current_time()
            assert await old.refresh(0) == 0
            await drained.wait()
            assert trio.current_time() - started < 1
            assert node.server.allocation_count == 0
            assert ends == [DrainEnd.ALL_ENDED]
        nursery.cancel_scope.cancel()


async def test_newcomers_are_sent_to_the_alternate_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as old, udp_client(local.udp) as newcomer:
            await old.allocate()
            nursery.start_soon(lambda: local.node.drain(3600, alternate=("192.0.2.80", 3478)))
            await trio.testing.wait_all_tasks_blocked()
            try:
                await newcomer.allocate()
            except TurnError as error:
                assert error.code == ErrorCode.TRY_ALTERNATE
            else:
                raise AssertionError("a draining node allocated")
            await old.refresh(0)
        nursery.cancel_scope.cancel()


async def test_progress_is_reported_until_the_timeout_ends_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        node = local.node
        async with udp_client(local.udp) as one, udp_client(local.udp) as two:
            await one.allocate()
            await two.allocate()
            progress: list[tuple[float, int]] = []
            started = trio.current_time()

            def report(left: int) -> None:
                progress.append((trio.current_time() - started, left))

            # Both refresh their allocations past the timeout's end: only it stops them.
            async def keep_refreshing() -> None:
                while True:
                    await trio.sleep(60)
                    await one.refresh(600)
                    await two.refresh(600)

            nursery.start_soon(keep_refreshing)
            end = await node.drain(45, progress=report)
            assert end is DrainEnd.TIMEOUT
            assert trio.current_time() - started == 45
            # Every DRAIN_PROGRESS_SECONDS while allocations were left, with their count.
            assert [left for _, left in progress] == [2, 2, 2, 2]
            assert [at for at, _ in progress] == [DRAIN_PROGRESS_SECONDS * k for k in (1, 2, 3, 4)]
            assert node.server.allocation_count == 0
            ended = node.server.stats.allocations_ended
            assert ended[(ClientTransport.UDP, EndReason.SHUTDOWN)] == 2
        nursery.cancel_scope.cancel()


async def test_end_drain_now_ends_it_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        node = local.node
        async with udp_client(local.udp) as client:
            await client.allocate()
            ends: list[DrainEnd] = []

            async def drain() -> None:
                ends.append(await node.drain(3600))

            nursery.start_soon(drain)
            await trio.sleep(30)
            assert ends == [] and node.server.allocation_count == 1
            node.end_drain_now()
            await trio.testing.wait_all_tasks_blocked()
            assert ends == [DrainEnd.ENDED_NOW]
            assert node.server.allocation_count == 0
        nursery.cancel_scope.cancel()


async def test_a_drain_without_allocations_ends_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        started = trio.current_time()
        assert await local.node.drain(3600) is DrainEnd.ALL_ENDED
        assert trio.current_time() == started
        nursery.cancel_scope.cancel()
