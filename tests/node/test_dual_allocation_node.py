"""A dual allocation on a real node (RFC 8656 §7.2 ADDITIONAL-ADDRESS-FAMILY, §7.3),
relay addresses 127.0.0.1 and ::1, a raw UDP client and one loopback peer per family.

One Allocate gets both relayed addresses; each peer is reached from (and answers to) the
relayed address of its family, by Send/Data indications and by channels; a Refresh with
REQUESTED-ADDRESS-FAMILY IPv6 and LIFETIME 0 closes the IPv6 socket alone; deleting the
allocation closes both.
"""

from __future__ import annotations

import socket

import pytest
import trio

from tests.helpers.netutil import ipv6_loopback_works
from tests.helpers.turn_client import peer, port_is_free, start_node, udp_client
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import (
    AdditionalAddressFamily,
    EvenPort,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
)
from trelay.stun.codes import AddressFamily, Method, TransportProtocol
from trelay.stun.error_attributes import AddressErrorCode
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig

pytestmark = pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")

REALM = "interop.test"
DUAL = TurnConfig(realm=REALM, relay_host="127.0.0.1", relay_host_v6="::1")
ADDITIONAL = AdditionalAddressFamily(AddressFamily.IPV6)


def v6_port_is_free(address: Address) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


async def test_both_families_relay_through_one_allocation() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, DUAL)
        async with udp_client(local.udp) as client, peer() as four, peer("::1") as six:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), ADDITIONAL
            )
            assert reply.get(AddressErrorCode) is None
            v4, v6 = [(a.host, a.port) for a in reply.get_all(XorRelayedAddress)]
            assert (v4[0], v6[0]) == ("127.0.0.1", "::1")
            await client.create_permission(four.address, six.address)
            # Indications: each peer hears from the relayed address of its family.
            await client.send_indication(four.address, b"to four")
            assert await four.receive() == (b"to four", v4)
            await client.send_indication(six.address, b"to six")
            data, source = await six.receive()
            assert (data, source[:2]) == (b"to six", v6)
            await six.send(v6, b"from six")
            assert await client.receive_data() == (six.address, b"from six")
            await four.send(v4, b"from four")
            assert await client.receive_data() == (four.address, b"from four")
            # Channels: ChannelData goes out of the socket of the peer's family.
            await client.channel_bind(0x4000, six.address)
            await client.channel_bind(0x4001, four.address)
            for _ in range(3):  # the first goes through the relay socket, then connected
                await client.send_channel_data(0x4000, b"six over a channel")
                data, source = await six.receive()
                assert (data, source[:2]) == (b"six over a channel", v6)
                await client.send_channel_data(0x4001, b"four over a channel")
                assert await four.receive() == (b"four over a channel", v4)
            await six.send(v6, b"back on six")
            assert await client.receive_data() == (0x4000, b"back on six")
            # The IPv6 address alone is deleted; the IPv4 one relays on.
            await client.checked(
                Method.REFRESH, Lifetime(0), RequestedAddressFamily(AddressFamily.IPV6)
            )
            assert v6_port_is_free(v6) and not port_is_free(v4)
            await client.send_channel_data(0x4001, b"still four")
            assert await four.receive() == (b"still four", v4)
            await client.checked(Method.REFRESH, Lifetime(0))
            assert port_is_free(v4)
        nursery.cancel_scope.cancel()


async def test_an_ended_dual_allocation_frees_both_ports() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, DUAL)
        async with udp_client(local.udp) as client:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), ADDITIONAL
            )
            v4, v6 = [(a.host, a.port) for a in reply.get_all(XorRelayedAddress)]
            assert not port_is_free(v4) and not v6_port_is_free(v6)
            await client.checked(Method.REFRESH, Lifetime(0))
            assert port_is_free(v4) and v6_port_is_free(v6)
        nursery.cancel_scope.cancel()


async def test_a_node_without_ipv6_answers_ipv4_and_address_error_440() -> None:
    config = TurnConfig(realm=REALM, relay_host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, config)
        async with udp_client(local.udp) as client:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), ADDITIONAL
            )
            assert [a.host for a in reply.get_all(XorRelayedAddress)] == ["127.0.0.1"]
            error = reply.get(AddressErrorCode)
            assert error is not None and (error.family, error.code) == (AddressFamily.IPV6, 440)
        nursery.cancel_scope.cancel()


async def test_even_port_holds_in_both_families() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, DUAL)  # no port range: the runtime picks
        async with udp_client(local.udp) as client:
            reply = await client.checked(
                Method.ALLOCATE, RequestedTransport(TransportProtocol.UDP), ADDITIONAL, EvenPort()
            )
            v4, v6 = [(a.host, a.port) for a in reply.get_all(XorRelayedAddress)]
            # The IPv6 socket takes the IPv4 one's (even) port when it is free, as here.
            assert v4[1] % 2 == 0 and v6[1] == v4[1]
        nursery.cancel_scope.cancel()
