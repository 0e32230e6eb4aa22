"""Lifetimes on a real TurnNode: allocations, permissions and channels expire on trio time.

Real sockets on loopback; the node's `now` is `trio.current_time()`, so the autojump
MockClock carries it through hundreds of seconds at once, while nonces keep the real
wall clock. RFC 8656 §7 (allocation lifetime, Refresh, LIFETIME 0), §9 (permissions
last 300 s), §11/§12 (channels last 600 s and keep their peer's permission, design §5).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import (
    LocalNode,
    Peer,
    TurnClient,
    TurnError,
    peer,
    port_is_free,
    start_node,
    udp_client,
)
from trelay.stun.codes import ErrorCode
from trelay.turn.addressing import ClientTransport
from trelay.turn.allocation import Allocation
from trelay.turn.stats import Drop

CHANNEL = 0x4001


# Every test asks for `autojump_clock` itself: pytest-trio takes the clock from the
# test function's own arguments.
@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery)
        nursery.cancel_scope.cancel()


def allocation_of(local: LocalNode, client: TurnClient) -> Allocation | None:
    assert client.relayed is not None
    return local.node.server.by_relayed.get(client.relayed)


async def sleep_until_after(deadline: float) -> None:
    await trio.sleep_until(deadline + 1)


async def nothing_arrives(client: TurnClient) -> bool:
    """True if no data reaches the client within its timeout (mock seconds)."""
    with trio.move_on_after(client.timeout):
        await client.receive_data()
        return False
    return True


async def relays_from(sender: Peer, client: TurnClient, payload: bytes) -> bool:
    """Send `payload` from the peer to the client's relayed address; True if it arrived."""
    assert client.relayed is not None
    await sender.send(client.relayed, payload)
    with trio.move_on_after(client.timeout):
        origin, data = await client.receive_data()
        assert data == payload
        assert origin in (sender.address, CHANNEL)
        return True
    return False


async def test_an_allocation_not_refreshed_ends_at_its_lifetime(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client, peer() as other:
        relayed = await client.allocate()
        await client.create_permission(other.address)
        allocation = allocation_of(local, client)
        assert allocation is not None
        expires_at = allocation.expires_at
        assert expires_at == pytest.approx(trio.current_time() + 600, abs=1)
        await trio.sleep_until(expires_at - 1)
        assert allocation_of(local, client) is allocation
        assert not port_is_free(relayed)

        await sleep_until_after(expires_at)
        assert local.node.server.allocations == {}
        assert local.node.server.by_relayed == {}
        assert local.node.server.client_table(ClientTransport.UDP, local.udp) == {}
        # The relay socket is closed: the port is free and a peer reaches nothing.
        assert port_is_free(relayed)
        before = local.node.counters.peer_to_client_datagrams
        await other.send(relayed, b"anyone there?")
        assert await nothing_arrives(client)
        assert local.node.counters.peer_to_client_datagrams == before
        # RFC 8656 §7.3: a Refresh for no allocation is 437.
        with pytest.raises(TurnError) as refused:
            await client.refresh()
        assert refused.value.code == ErrorCode.ALLOCATION_MISMATCH


async def test_refresh_keeps_an_allocation_past_its_first_lifetime(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client, peer() as other:
        relayed = await client.allocate()
        allocation = allocation_of(local, client)
        assert allocation is not None
        first_expiry = allocation.expires_at
        await trio.sleep_until(first_expiry - 60)  # Chrome refreshes at lifetime - 60 s
        assert await client.refresh(600) == 600
        assert allocation.expires_at == pytest.approx(trio.current_time() + 600, abs=1)

        await trio.sleep_until(first_expiry + 120)
        assert allocation_of(local, client) is allocation
        assert not port_is_free(relayed)
        await client.create_permission(other.address)
        assert await relays_from(other, client, b"still here")
        await client.send_indication(other.address, b"and back")
        data, source = await other.receive()
        assert (data, source) == (b"and back", relayed)


async def test_a_permission_expires_after_300_seconds(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client, peer() as other:
        await client.allocate()
        await client.create_permission(other.address)
        allocation = allocation_of(local, client)
        assert allocation is not None
        permission_expiry = allocation.permissions[other.address[0]]
        assert permission_expiry == pytest.approx(trio.current_time() + 300, abs=1)
        await trio.sleep_until(permission_expiry - 1)
        assert await relays_from(other, client, b"at 299 s")

        await sleep_until_after(permission_expiry)
        assert allocation.permissions == {}
        counters = local.node.counters
        dropped, delivered = counters.dropped[Drop.NO_PERMISSION], counters.peer_to_client_datagrams
        assert not await relays_from(other, client, b"at 301 s")
        assert counters.dropped[Drop.NO_PERMISSION] == dropped + 1
        assert counters.peer_to_client_datagrams == delivered
        # RFC 8656 §10.2: the client's Send indication is dropped too.
        sent = counters.client_to_peer_datagrams
        await client.send_indication(other.address, b"nobody hears this")
        with trio.move_on_after(client.timeout):
            await other.receive()
            pytest.fail("a Send indication without a permission reached the peer")
        assert counters.client_to_peer_datagrams == sent
        # The allocation itself lives on (600 s).
        assert allocation_of(local, client) is allocation


async def test_a_channel_keeps_its_permission_alive_at_330_seconds(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client, peer() as other:
        relayed = await client.allocate()
        await client.channel_bind(CHANNEL, other.address)  # and never CreatePermission
        allocation = allocation_of(local, client)
        assert allocation is not None
        start = trio.current_time()

        await trio.sleep_until(start + 330)
        assert allocation.permissions[other.address[0]] >= start + 600
        assert allocation.channels == {CHANNEL: other.address}
        assert await relays_from(other, client, b"peer at 330 s")
        await client.send_channel_data(CHANNEL, b"client at 330 s")
        assert await other.receive() == (b"client at 330 s", relayed)
        assert local.node.counters.dropped[Drop.NO_PERMISSION] == 0

        # RFC 8656 §12: the channel (and with it the permission) ends at 600 s, while the
        # allocation, refreshed now, lives on.
        assert await client.refresh(3600) == 3600
        await sleep_until_after(start + 600)
        assert allocation_of(local, client) is allocation
        assert allocation.channels == {}
        assert allocation.permissions == {}
        assert not await relays_from(other, client, b"peer at 601 s")
        assert local.node.counters.dropped[Drop.NO_PERMISSION] == 1


async def test_refresh_with_lifetime_zero_closes_the_relay_at_once(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with udp_client(local.udp) as client:
        relayed = await client.allocate()
        assert not port_is_free(relayed)
        now = trio.current_time()
        assert await client.refresh(0) == 0
        assert local.node.server.allocations == {}
        # The relay task leaves its cancel scope (closing the socket) the next time it is
        # scheduled: a few checkpoints, with no time passing.
        for _ in range(10):
            if port_is_free(relayed):
                break
            await trio.lowlevel.checkpoint()
        assert port_is_free(relayed)
        assert trio.current_time() == now
        with pytest.raises(TurnError) as refused:
            await client.create_permission(("127.0.0.1", 9))
        assert refused.value.code == ErrorCode.ALLOCATION_MISMATCH
