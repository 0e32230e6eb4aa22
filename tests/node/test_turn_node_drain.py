"""Graceful drain of a real TurnNode (design §4): `TurnNode.drain(grace)` tells the core
to start draining (`TurnServer.start_draining`), so new Allocates get 508 at once while
existing allocations keep refreshing and relaying; the drain ends as soon as the last
allocation is gone, or at the grace deadline, whichever comes first.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.helpers.turn_client import TurnError, peer, start_node, udp_client
from trelay.stun.codes import ErrorCode


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

            async def drain() -> None:
                await node.drain(3600)
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
        nursery.cancel_scope.cancel()
