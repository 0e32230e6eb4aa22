"""The node with an IPv6 relay beside the IPv4 one, and DONT-FRAGMENT, on real sockets.

RFC 8656 §7.2: REQUESTED-ADDRESS-FAMILY picks the relayed address's family whatever the
client's own; §11.2 / §7.2 step 4: DONT-FRAGMENT is accepted where the runtime can set
the IP DF bit (Linux), and a Send indication carrying it goes out with DF set just for
that datagram.
"""

from __future__ import annotations

import socket
import sys

import pytest
import trio

from tests.helpers.netutil import ipv6_loopback_works
from tests.helpers.turn_client import TurnError, peer, start_node, udp_client
from trelay.stun.attributes import DontFragment, RequestedAddressFamily
from trelay.stun.codes import AddressFamily
from trelay.turn.config import TurnConfig

REALM = "interop.test"


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
needs_linux = pytest.mark.skipif(sys.platform != "linux", reason="DF is set the Linux way")
DUAL = TurnConfig(realm=REALM, relay_host="127.0.0.1", relay_host_v6="::1", dont_fragment=True)


@needs_ipv6
async def test_an_ipv4_client_relays_to_an_ipv6_peer() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, DUAL)
        async with udp_client(local.udp) as client, peer("::1") as far:
            relayed = await client.allocate(None, RequestedAddressFamily(AddressFamily.IPV6))
            assert relayed[0] == "::1"
            await client.channel_bind(0x4000, far.address)
            await client.send_channel_data(0x4000, b"over the channel")
            assert await far.receive() == (b"over the channel", relayed)
            await far.send(relayed, b"back")
            assert await client.receive_data() == (0x4000, b"back")
            # An IPv4 peer does not fit an IPv6 allocation: 443.
            async with peer() as v4:
                with pytest.raises(TurnError) as refused:
                    await client.create_permission(v4.address)
                assert refused.value.code == 443
        nursery.cancel_scope.cancel()


@needs_linux
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_dont_fragment_is_accepted_and_used_for_one_datagram(host: str) -> None:
    family = AddressFamily.IPV6 if ":" in host else AddressFamily.IPV4
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, DUAL)
        async with udp_client(local.udp) as client, peer(host) as far:
            relayed = await client.allocate(None, RequestedAddressFamily(family), DontFragment())
            await client.create_permission(far.address)
            relay_socket = local.node._relays[relayed].sock  # white-box: the option's state
            level, option = (
                (socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG)
                if family is AddressFamily.IPV6
                else (socket.IPPROTO_IP, 10)  # IP_MTU_DISCOVER
            )
            before = relay_socket.getsockopt(level, option)
            await client.send_indication(far.address, b"with DF", DontFragment())
            assert await far.receive() == (b"with DF", relayed)
            assert relay_socket.getsockopt(level, option) == before  # back to the default
            await client.send_indication(far.address, b"without")
            assert await far.receive() == (b"without", relayed)
        nursery.cancel_scope.cancel()
