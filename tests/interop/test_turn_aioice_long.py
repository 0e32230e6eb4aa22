"""An aioice relay-only call keeps flowing past 330 s of node time with no CreatePermission.

aioice binds a channel per peer, refreshes channels only every ~500 s and never sends
CreatePermission (design §5). A server that let the ChannelBind's permission expire at
300 s (RFC 8656 §9) would drop the call; trelay keeps it alive for the channel's 600 s
(§12). aioice runs in asyncio on real time; the node runs in a trio thread on a
`MockClock` (rate 1, so it also follows real time), and the test jumps that clock by
330 s in the middle of the call.

The control: in the same node, a trio client that only ever sent CreatePermission loses
its permission at the same jump, and its peer's datagrams are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.lowlevel
import trio.testing

from tests.helpers.aioice_call import connected_pair, exchange
from tests.helpers.turn_client import Peer, TurnClient, peer, udp_client
from tests.helpers.turn_relay import PASSWORD, USERNAME, RunningNode, threaded_turn_node
from trelay.node.turn_node import TurnNode
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.stats import Drop

pytestmark = pytest.mark.interop
TIMEOUT = 20.0
JUMP = 330.0  # past the 300 s permission lifetime, well before the 600 s channel lifetime


# --- the node on a MockClock in a thread ----------------------------------------------------


@dataclass
class ClockedNode:
    running: RunningNode
    clock: trio.testing.MockClock

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        return self.running.token

    def call(self, function: Callable[[], object]) -> object:
        """Run `function` in the node's thread (blocking this one)."""
        return trio.from_thread.run_sync(function, trio_token=self.token)

    def run(self, function: Callable[[], Awaitable[None]]) -> None:
        """Run an async `function` in the node's thread (blocking this one)."""
        trio.from_thread.run(function, trio_token=self.token)


@contextmanager
def clocked_turn_node(clock: trio.testing.MockClock) -> Iterator[ClockedNode]:
    with threaded_turn_node(clock=clock) as running:
        yield ClockedNode(running, clock)


async def settle(node: TurnNode) -> None:
    """Let the timer task catch up with the clock (run in the node's thread)."""
    with trio.fail_after(TIMEOUT):
        while True:
            deadline = node.server.next_deadline()
            if deadline is None or deadline > trio.current_time():
                return
            await trio.lowlevel.checkpoint()


# --- the control: CreatePermission only ----------------------------------------------------


class CreatePermissionOnly:
    """A trio TURN client in the node's thread that permits its peer with CreatePermission."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self.stack = AsyncExitStack()
        self.client: TurnClient | None = None
        self.peer: Peer | None = None
        self._five_tuple: FiveTuple | None = None

    @property
    def five_tuple(self) -> FiveTuple:
        assert self._five_tuple is not None, "start() first"
        return self._five_tuple

    async def start(self) -> None:
        client = await self.stack.enter_async_context(udp_client(self.node.udp))
        other = await self.stack.enter_async_context(peer())
        relayed = await client.allocate()
        await client.create_permission(other.address)
        await other.send(relayed, b"control before the jump")
        assert await client.receive_data() == (other.address, b"control before the jump")
        self.client, self.peer = client, other
        self._five_tuple = FiveTuple(ClientTransport.UDP, client.local, self.node.udp)

    async def after_jump(self) -> None:
        """The permission is gone: the peer's next datagram is dropped, nothing arrives."""
        assert self.client is not None and self.peer is not None
        assert self.client.relayed is not None
        allocation = self.node.node.server.allocations[self.five_tuple]
        assert allocation.permissions == {}
        counters = self.node.node.counters
        dropped = counters.dropped[Drop.NO_PERMISSION]
        await self.peer.send(self.client.relayed, b"control after the jump")
        with trio.fail_after(TIMEOUT):
            # The relay task counts the drop; there is no event to wait on.
            while counters.dropped[Drop.NO_PERMISSION] == dropped:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert counters.dropped[Drop.NO_PERMISSION] == dropped + 1
        assert self.client.discard_pending() == 0

    async def close(self) -> None:
        await self.stack.aclose()


# --- aioice --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    now: float
    allocations: dict[FiveTuple, tuple[dict[str, float], dict[int, Address]]]


def snapshot(node: TurnNode) -> Snapshot:
    return Snapshot(
        trio.current_time(),
        {
            five_tuple: (dict(allocation.permissions), dict(allocation.channels))
            for five_tuple, allocation in node.server.allocations.items()
        },
    )


async def long_call(node: ClockedNode, transport: str, control: CreatePermissionOnly) -> Snapshot:
    server = node.running.udp if transport == "udp" else node.running.tcp

    async with connected_pair(server, USERNAME, PASSWORD, transport) as (left, right):
        await exchange(left, right, b"before the jump")

        await asyncio.to_thread(node.call, lambda: node.clock.jump(JUMP))
        await asyncio.to_thread(node.run, lambda: settle(node.running.node))
        after = await asyncio.to_thread(node.call, lambda: snapshot(node.running.node))
        await asyncio.to_thread(node.run, control.after_jump)

        await exchange(left, right, b"330 s later")
        await exchange(left, right, b"and once more")
        assert isinstance(after, Snapshot)
        return after


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_aioice_call_outlives_the_permission_lifetime(transport: str) -> None:
    clock = trio.testing.MockClock(rate=1.0)
    with clocked_turn_node(clock) as node:
        control = CreatePermissionOnly(node.running)
        node.run(control.start)
        start = node.call(trio.current_time)
        assert isinstance(start, float)
        try:
            after = asyncio.run(long_call(node, transport, control))
        finally:
            node.run(control.close)

        assert after.now >= start + JUMP
        calls = {ft: state for ft, state in after.allocations.items() if ft != control.five_tuple}
        assert len(calls) == 2  # one relay per aioice agent
        for five_tuple, (permissions, channels) in calls.items():
            assert five_tuple.transport.value == transport
            # The channel to the other agent's relay, and through it the permission, live on.
            assert channels, "aioice bound no channel"
            for peer_address in channels.values():
                assert permissions[peer_address[0]] > after.now
        assert after.allocations[control.five_tuple] == ({}, {})
        # Nothing of the call itself was dropped for lack of a permission: only the
        # control's one datagram.
        assert node.running.node.counters.dropped[Drop.NO_PERMISSION] == 1
        assert node.running.node.counters.peer_to_client_bytes > 0
