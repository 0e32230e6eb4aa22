"""Relaying data (RFC 8656 §10, §12): Send indications, Data indications, ChannelData
framing with its TCP/TLS padding, and what is dropped silently."""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import REALM, Client, assert_success, make_server
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import Data, Fingerprint, MessageIntegrity, RequestedAddressFamily
from trelay.stun.channel_data import decode_channel_data, encode_channel_data
from trelay.stun.codes import AddressFamily, MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.actions import SendToPeer
from trelay.turn.addressing import ClientTransport
from trelay.turn.allocation import Allocation
from trelay.turn.config import TurnConfig

PEER = ("127.0.0.1", 40000)


def allocated(transport: ClientTransport = ClientTransport.UDP) -> tuple[Client, Allocation]:
    c = Client(make_server(), transport=transport)
    assert_success(c, c.allocate())
    return c, c.server.allocations[c.five_tuple]


def test_send_indication_needs_a_permission() -> None:
    c, state = allocated()
    assert c.send_indication(PEER, b"early") == []
    assert_success(c, c.permit(("127.0.0.1", 1)))  # the port does not matter (§9)
    assert c.send_indication(PEER, b"hello") == [SendToPeer(state.relayed, PEER, b"hello")]
    assert c.send_indication(("127.0.0.2", 1), b"other ip") == []


def test_send_indication_after_channel_bind_only() -> None:
    c, state = allocated()
    assert_success(c, c.bind(0x4000, PEER))
    assert c.send_indication(PEER, b"x") == [SendToPeer(state.relayed, PEER, b"x")]


def test_send_indication_without_allocation_or_attributes_is_dropped() -> None:
    c = Client(make_server())
    assert c.send_indication(PEER, b"x") == []
    c, _ = allocated()
    assert_success(c, c.permit(PEER))
    for attributes in [(XorPeerAddress(*PEER),), (Data(b"x"),), ()]:
        message = Message(Method.SEND, MessageClass.INDICATION, bytes(12), attributes)
        assert c.send_raw(encode_message(message)) == []


def test_send_indication_to_the_other_family_is_dropped() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1", relay_host_v6="2001:db8::1")
    c = Client(make_server(config))
    assert_success(c, c.allocate(RequestedAddressFamily(AddressFamily.IPV6)))
    assert c.send_indication(("::ffff:127.0.0.1", 1), b"x") == []
    assert c.send_indication(PEER, b"x") == []


def test_other_indications_and_responses_from_clients_are_ignored() -> None:
    c, _ = allocated()
    for method, message_class in [
        (Method.DATA, MessageClass.INDICATION),
        (Method.ALLOCATE, MessageClass.SUCCESS),
        (Method.REFRESH, MessageClass.ERROR),
    ]:
        assert c.send_raw(encode_message(Message(method, message_class, bytes(12)))) == []


def test_bad_fingerprint_is_dropped_silently() -> None:
    c = Client(make_server())
    data = bytearray(encode_signed(Message(Method.BINDING, MessageClass.REQUEST, bytes(12))))
    data[-1] ^= 1
    assert c.send_raw(bytes(data)) == []


def test_peer_datagram_without_permission_is_dropped() -> None:
    c, state = allocated()
    assert c.server.peer_datagram(state, PEER, b"x") is None


def test_peer_datagram_with_permission_becomes_a_data_indication() -> None:
    c, state = allocated()
    assert_success(c, c.permit(PEER))
    other_port = ("127.0.0.1", 9)
    framed = c.server.peer_datagram(state, other_port, b"payload")
    assert framed is not None
    message = decode_message(framed)
    assert (message.method, message.message_class) == (Method.DATA, MessageClass.INDICATION)
    assert message.get(XorPeerAddress) == XorPeerAddress(*other_port)
    assert message.get(Data) == Data(b"payload")
    assert message.get(Fingerprint) is None and message.get(MessageIntegrity) is None


@pytest.mark.parametrize(
    "transport, payload, expected",
    [
        (ClientTransport.UDP, b"abcde", b"\x40\x01\x00\x05abcde"),
        (ClientTransport.TCP, b"abcde", b"\x40\x01\x00\x05abcde\x00\x00\x00"),
        (ClientTransport.TLS, b"abcd", b"\x40\x01\x00\x04abcd"),
        (ClientTransport.TCP, b"", b"\x40\x01\x00\x00"),
    ],
)
def test_peer_datagram_on_a_channel_becomes_channel_data(
    transport: ClientTransport, payload: bytes, expected: bytes
) -> None:
    c, state = allocated(transport)
    assert_success(c, c.bind(0x4001, PEER))
    framed = c.server.peer_datagram(state, PEER, payload)
    assert framed == expected
    assert decode_channel_data(framed) == (0x4001, payload)
    # Another port of the same IP has the permission but not the channel.
    other = c.server.peer_datagram(state, ("127.0.0.1", 9), payload)
    assert other is not None and decode_message(other).method == Method.DATA


@pytest.mark.parametrize("length", range(9))
def test_channel_data_frame_padding(length: int) -> None:
    data = bytes(range(length))
    assert encode_channel_data(0x4FFF, data, pad=False) == b"\x4f\xff" + bytes([0, length]) + data
    padded = encode_channel_data(0x4FFF, data, pad=True)
    assert len(padded) % 4 == 0 and padded.startswith(b"\x4f\xff" + bytes([0, length]) + data)
    assert padded[4 + length :] == bytes(len(padded) - 4 - length)
