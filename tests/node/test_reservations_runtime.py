"""EVEN-PORT and port reservations on a real TurnNode (RFC 8656 §7.2, §14.6, §14.9).

Real sockets on loopback. Without a configured relay port range the kernel's bind(0)
gave odd ports 8 times in 10: the runtime now picks even ports itself (20 of 20 here).
The R bit's port+1 is held bound (nobody else can take it) until the token redeems it,
when that very socket relays, or until its 30 s run out (trio's autojump clock), when
it is closed and free again.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import (
    LocalNode,
    TurnClient,
    TurnError,
    peer,
    port_is_free,
    start_node,
    udp_client,
)
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import EvenPort, RequestedTransport, ReservationToken
from trelay.stun.codes import Method, TransportProtocol
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig
from trelay.turn.reservations import RESERVATION_SECONDS

REALM = "interop.test"
TRIES = 20


async def reserve(client: TurnClient) -> tuple[Address, bytes]:
    """An Allocate with EVEN-PORT R=1: the relayed address and the reservation's token."""
    reply = await client.checked(
        Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), EvenPort(reserve_next=True)
    )
    relayed, token = reply.get(XorRelayedAddress), reply.get(ReservationToken)
    assert relayed is not None and token is not None
    return (relayed.host, relayed.port), token.value


async def test_even_port_without_a_range_is_always_even() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        assert local.node.server.ports is None  # the kernel's range, no pool
        ports = []
        for _ in range(TRIES):
            async with udp_client(local.udp) as client:
                ports.append((await client.allocate(None, EvenPort()))[1])
        assert [port % 2 for port in ports] == [0] * TRIES, ports
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("port_range", [None, (50000, 50999)], ids=["kernel", "range"])
async def test_a_reserved_port_is_held_then_relays_for_its_token(
    port_range: tuple[int, int] | None,
) -> None:
    config = TurnConfig(realm=REALM, relay_host="127.0.0.1", port_range=port_range)
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, config)
        async with udp_client(local.udp) as rtp, udp_client(local.udp) as rtcp, peer() as far:
            relayed, token = await reserve(rtp)
            assert relayed[1] % 2 == 0
            held: Address = (relayed[0], relayed[1] + 1)
            assert not port_is_free(held)  # the runtime holds it
            assert await rtcp.allocate(None, ReservationToken(token)) == held
            # The held socket is now the RTCP allocation's relay socket, both ways.
            await rtcp.create_permission(far.address)
            await rtcp.send_indication(far.address, b"rtcp")
            assert await far.receive() == (b"rtcp", held)
            await far.send(held, b"back")
            assert await rtcp.receive_data() == (far.address, b"back")
            # A token is good once.
            async with udp_client(local.udp) as late:
                with pytest.raises(TurnError) as refused:
                    await late.allocate(None, ReservationToken(token))
                assert refused.value.code == 508
        nursery.cancel_scope.cancel()


async def test_an_unused_reservation_frees_its_port_after_30_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        local: LocalNode = await start_node(nursery)
        async with udp_client(local.udp) as rtp, udp_client(local.udp) as rtcp:
            relayed, token = await reserve(rtp)
            held: Address = (relayed[0], relayed[1] + 1)
            await trio.sleep(RESERVATION_SECONDS - 1)
            assert not port_is_free(held)
            await trio.sleep(2)
            assert port_is_free(held)
            assert local.node._reserved == {}  # white-box: nothing held any more
            with pytest.raises(TurnError) as refused:
                await rtcp.allocate(None, ReservationToken(token))
            assert refused.value.code == 508
        nursery.cancel_scope.cancel()
