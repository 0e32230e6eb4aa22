"""Relay-only aioice agents for tests: build them, connect them, talk through the relay.

One place for what several test packages do with aioice (tests/interop, tests/tokens,
tests/metrics): agents forced to `TransportPolicy.RELAY` against one TURN server, the
in-process candidate exchange (`trelay.icekit.ice_shim.connect_pair`), a message each way, and
the kinds of the selected pairs (`trelay.icekit.ice_shim.selected_pairs`). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aioice

from trelay.icekit.ice_shim import connect_pair, selected_pairs

TIMEOUT = 20.0
Address = tuple[str, int]


def relay_only_agent(
    server: Address, username: str, password: str, transport: str = "udp", *, controlling: bool
) -> aioice.Connection:
    """An aioice agent that gathers relayed candidates only; "tls" is TURN over TLS."""
    return aioice.Connection(
        ice_controlling=controlling,
        components=1,
        turn_server=server,
        turn_username=username,
        turn_password=password,
        turn_transport="udp" if transport == "udp" else "tcp",
        turn_ssl=transport == "tls",
        transport_policy=aioice.TransportPolicy.RELAY,
        use_ipv6=False,
    )


@asynccontextmanager
async def connected_pair(
    server: Address, username: str, password: str, transport: str = "udp"
) -> AsyncIterator[tuple[aioice.Connection, aioice.Connection]]:
    """Two relay-only agents, connected through `server`; closed on leaving."""
    left = relay_only_agent(server, username, password, transport, controlling=True)
    right = relay_only_agent(server, username, password, transport, controlling=False)
    try:
        await connect_pair(left, right, TIMEOUT)
        yield left, right
    finally:
        await left.close()
        await right.close()


async def exchange(left: aioice.Connection, right: aioice.Connection, message: bytes) -> None:
    """`message` left -> right and its reverse right -> left, each within the timeout."""
    await left.send(message)
    assert await asyncio.wait_for(right.recv(), TIMEOUT) == message
    await right.send(message[::-1])
    assert await asyncio.wait_for(left.recv(), TIMEOUT) == message[::-1]


async def relayed_call(
    server: Address,
    username: str,
    password: str,
    transport: str = "udp",
    message: bytes = b"ping through trelay",
) -> list[str]:
    """Connect two relay-only agents, exchange `message` both ways; the pairs' kinds."""
    async with connected_pair(server, username, password, transport) as (left, right):
        await exchange(left, right, message)
        pairs = [pair for agent in (left, right) for pair in selected_pairs(agent)]
        return [kind for pair in pairs for kind in (pair.local_type, pair.remote_type)]
