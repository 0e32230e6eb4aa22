"""Many TURN clients relaying at once through a node, for the tests that count what spread
over `trelay serve --workers N`: `clients_relaying` opens `count` clients (distinct
5-tuples) over UDP or any other transport the caller connects with, and each allocates,
binds a channel to a peer and sends it one ChannelData the peer must receive."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from tests.helpers.turn_client import Peer, TurnClient, TurnError, udp_client
from trelay.turn.addressing import Address

CHANNEL = 0x4000


@asynccontextmanager
async def clients_relaying(
    server: Address,
    far: Peer,
    count: int,
    *,
    connect: Callable[[Address], AbstractAsyncContextManager[TurnClient]] = udp_client,
    base_size: int = 100,
) -> AsyncIterator[tuple[int, list[TurnClient]]]:
    """`count` clients from `connect(server)` that each allocate, bind a channel to `far`
    and send it one ChannelData of `base_size + index` bytes: (payload bytes sent, the
    clients). Their allocations are held until leaving, then deleted (so a drain need
    not wait for them)."""
    sent, clients = 0, []
    async with AsyncExitStack() as stack:
        for index in range(count):
            client = await stack.enter_async_context(connect(server))
            clients.append(client)
            relayed = await client.allocate()
            await client.channel_bind(CHANNEL, far.address)
            payload = bytes([index]) * (base_size + index)
            await client.send_channel_data(CHANNEL, payload)
            assert await far.receive() == (payload, relayed)
            sent += len(payload)
        yield sent, clients
        for client in clients:
            with contextlib.suppress(TurnError):  # 437: its worker was killed meanwhile
                assert await client.refresh(0) == 0
