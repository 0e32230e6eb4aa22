"""RFC 5780 on real sockets: a node on 127.0.0.1 and 127.0.0.2 (both loopback on Linux)
answers raw Binding requests from the address each CHANGE-REQUEST asks for, to the port
RESPONSE-PORT names, and says so in RESPONSE-ORIGIN."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.helpers.nat_ports import ALTERNATE_HOST, PRIMARY_HOST, two_ports
from trelay.config.nat_discovery_settings import NatDiscoverySettings, resolve_nat_discovery
from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.node.assembly import RunningNode, start_node
from trelay.node.listeners import ListenError
from trelay.stun.address_attributes import OtherAddress, ResponseOrigin, XorMappedAddress
from trelay.stun.attributes import Attribute, ChangeRequest, Padding, ResponsePort
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.addressing import Address

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is loopback on Linux")

TIMEOUT = 10.0


def nat_settings() -> Settings:
    primary_port, alternate_port = two_ports()
    udp = (ListenAddress(PRIMARY_HOST, primary_port),)
    nat = resolve_nat_discovery(NatDiscoverySettings(True, ALTERNATE_HOST, alternate_port), udp)
    listen = ListenSettings(udp=udp, tcp=(), tls=(), nat=nat.extra_listen())
    return Settings(listen=listen, nat_discovery=nat)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[RunningNode]:
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, settings)
        yield node
        nursery.cancel_scope.cancel()


async def exchange(
    client: trio.socket.SocketType,
    to: Address,
    *attributes: Attribute,
    receiver: trio.socket.SocketType | None = None,
) -> tuple[Address, Message]:
    """Send one Binding request; the answer and the address it came from."""
    tid = new_transaction_id()
    request = Message(Method.BINDING, MessageClass.REQUEST, tid, attributes)
    await client.sendto(encode_message(request), to)
    with trio.fail_after(TIMEOUT):
        data, source = await (receiver or client).recvfrom(4096)
    reply = decode_message(data)
    assert reply.transaction_id == tid
    return (source[0], source[1]), reply


def udp_socket() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def test_each_change_request_is_answered_from_the_changed_address() -> None:
    settings = nat_settings()
    nat = settings.nat_discovery.core()
    assert nat is not None
    async with running(settings):
        with udp_socket() as client:
            await client.bind((PRIMARY_HOST, 0))
            mine = client.getsockname()
            for at in nat.addresses:
                for change_ip, change_port in [(False, False), (True, False), (False, True),
                                               (True, True)]:  # fmt: skip
                    change = ChangeRequest(change_ip, change_port)
                    source, reply = await exchange(client, at, change)
                    expected = nat.changed(at, change_ip, change_port)
                    # The datagram really left from the changed address, as it says.
                    assert source == expected, (at, change)
                    assert reply.get(ResponseOrigin) == ResponseOrigin(*expected)
                    assert reply.get(OtherAddress) == OtherAddress(*nat.changed(at, True, True))
                    assert reply.get(XorMappedAddress) == XorMappedAddress(*mine)


async def test_response_port_sends_to_another_port_of_the_source_ip() -> None:
    settings = nat_settings()
    nat = settings.nat_discovery.core()
    assert nat is not None
    async with running(settings):
        with udp_socket() as client, udp_socket() as other:
            await client.bind((PRIMARY_HOST, 0))
            await other.bind((PRIMARY_HOST, 0))
            port = other.getsockname()[1]
            request = (ChangeRequest(True, True), ResponsePort(port), Padding(bytes(600)))
            source, reply = await exchange(client, nat.primary, *request, receiver=other)
            assert source == nat.alternate
            assert reply.get(XorMappedAddress) == XorMappedAddress(*client.getsockname())
            padding = reply.get(Padding)
            assert padding is not None and len(padding.value) == 600
            # Nothing went to the port the request came from: the next thing it receives
            # is the answer to its next request (`exchange` checks the transaction id).
            source, reply = await exchange(client, nat.primary)
            assert source == nat.primary and reply.get(Padding) is None


async def test_a_node_without_the_feature_listens_once_and_refuses_change_request() -> None:
    settings = nat_settings()
    plain = Settings(listen=ListenSettings(udp=settings.listen.udp, tcp=(), tls=()))
    async with running(plain) as node:
        assert node.node.udp_sockets.keys() == {(a.host, a.port) for a in plain.listen.udp}
        with udp_socket() as client:
            await client.bind((PRIMARY_HOST, 0))
            primary = (plain.listen.udp[0].host, plain.listen.udp[0].port)
            source, reply = await exchange(client, primary, ChangeRequest(True, True))
            assert source == primary
            assert reply.message_class is MessageClass.ERROR


async def test_an_alternate_address_that_cannot_be_bound_names_its_key() -> None:
    settings = nat_settings()
    taken = settings.listen.nat[0]  # 127.0.0.2 at the primary port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((taken.host, taken.port))
        with pytest.RaisesGroup(ListenError, flatten_subgroups=True) as caught:
            async with running(settings):
                pass  # pragma: no cover - the start fails
    error = caught.value.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, ListenError)
    assert error.key == "nat_discovery.alternate_host"
    assert error.address == taken
