"""BindingResponder: RFC 8489 §6.3.1 request handling for the Binding method."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.attributes import Fingerprint, Software, UnknownAttribute, Username
from trelay.stun.codes import AttributeType, MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute, UnknownAttributes
from trelay.stun.integrity import encode_signed, verify_fingerprint
from trelay.stun.message import (
    Message,
    attribute_type,
    decode_message,
    encode_header,
    encode_message,
    encode_message_type,
)
from trelay.turn.binding import BindingResponder, Responder, reflexive_address

TID = bytes(range(12))
SOURCE = ("192.0.2.1", 32853)
SOFTWARE = "trelay test"


@pytest.fixture
def responder() -> BindingResponder:
    return BindingResponder(SOFTWARE)


def request(method: int = Method.BINDING, *attributes: UnknownAttribute | Username) -> Message:
    return Message(method, MessageClass.REQUEST, TID, tuple(attributes))


def answer(responder: Responder, data: bytes, source: tuple[str, int] = SOURCE) -> Message:
    reply = responder(data, source)
    assert reply is not None
    assert verify_fingerprint(reply)
    return decode_message(reply)


def test_responder_keeps_the_responder_contract(responder: BindingResponder) -> None:
    # What a listener relies on (`Responder`): bytes and the source in; the reply for that
    # source (bytes), or None for what gets no answer, out.
    typed: Responder = responder
    reply = typed(encode_message(request()), SOURCE)
    assert isinstance(reply, bytes)
    decoded = decode_message(reply)
    assert (decoded.transaction_id, decoded.get(XorMappedAddress)) == (
        TID,
        XorMappedAddress(*SOURCE),
    )
    indication = Message(Method.BINDING, MessageClass.INDICATION, TID)
    assert typed(encode_message(indication), SOURCE) is None
    assert typed(b"not STUN", SOURCE) is None


def test_success_layout(responder: BindingResponder) -> None:
    reply = answer(responder, encode_message(request()))
    assert reply.method == Method.BINDING
    assert reply.message_class is MessageClass.SUCCESS
    assert reply.transaction_id == TID
    assert [attribute_type(a) for a in reply.attributes] == [
        AttributeType.XOR_MAPPED_ADDRESS,
        AttributeType.SOFTWARE,
        AttributeType.FINGERPRINT,
    ]
    assert reply.get(XorMappedAddress) == XorMappedAddress(*SOURCE)
    assert reply.get(Software) == Software(SOFTWARE)


def test_success_for_a_request_with_a_valid_fingerprint(responder: BindingResponder) -> None:
    reply = answer(responder, encode_signed(request(), fingerprint=True))
    assert reply.message_class is MessageClass.SUCCESS
    assert reply.get(XorMappedAddress) == XorMappedAddress(*SOURCE)


def test_known_optional_and_unknown_optional_attributes_are_ignored(
    responder: BindingResponder,
) -> None:
    # 0x8F00 is comprehension-optional: RFC 8489 §6.3.1 says to ignore it.
    data = encode_message(request(Method.BINDING, UnknownAttribute(0x8F00, b"ab")))
    assert answer(responder, data).message_class is MessageClass.SUCCESS


def test_ipv6_source(responder: BindingResponder) -> None:
    reply = answer(responder, encode_message(request()), ("2001:db8::7", 4000))
    assert reply.get(XorMappedAddress) == XorMappedAddress("2001:db8::7", 4000)


def test_ipv4_mapped_ipv6_source_is_answered_in_ipv4_form(responder: BindingResponder) -> None:
    reply = answer(responder, encode_message(request()), ("::ffff:198.51.100.9", 5000))
    mapped = reply.get(XorMappedAddress)
    assert mapped == XorMappedAddress("198.51.100.9", 5000)
    assert mapped is not None
    assert mapped.family == 1


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("10.0.0.1", 1), ("10.0.0.1", 1)),
        (("::FFFF:10.0.0.1", 2), ("10.0.0.1", 2)),
        (("fe80::1%eth0", 3), ("fe80::1", 3)),
        (("2001:DB8:0:0::1", 4), ("2001:db8::1", 4)),
    ],
)
def test_reflexive_address(source: tuple[str, int], expected: tuple[str, int]) -> None:
    assert reflexive_address(source) == expected


def test_unknown_comprehension_required_attributes_get_420(
    responder: BindingResponder,
) -> None:
    data = encode_message(
        request(
            Method.BINDING,
            UnknownAttribute(0x7F01, b"x"),
            UnknownAttribute(0x8F00, b"optional"),
            UnknownAttribute(0x0002, b"\x00\x01\x00\x02"),
        )
    )
    reply = answer(responder, data)
    assert reply.method == Method.BINDING
    assert reply.message_class is MessageClass.ERROR
    assert reply.transaction_id == TID
    assert reply.get(ErrorCodeAttribute) == ErrorCodeAttribute(420, "Unknown Attribute")
    # Exactly the comprehension-required ones, in request order.
    assert reply.get(UnknownAttributes) == UnknownAttributes((0x7F01, 0x0002))
    assert reply.get(Software) == Software(SOFTWARE)
    assert attribute_type(reply.attributes[-1]) == AttributeType.FINGERPRINT
    assert reply.get(XorMappedAddress) is None


def test_420_takes_precedence_over_an_unsupported_method(responder: BindingResponder) -> None:
    data = encode_message(request(Method.ALLOCATE, UnknownAttribute(0x7F02, b"")))
    reply = answer(responder, data)
    assert reply.method == Method.ALLOCATE
    assert reply.get(ErrorCodeAttribute) == ErrorCodeAttribute(420, "Unknown Attribute")
    assert reply.get(UnknownAttributes) == UnknownAttributes((0x7F02,))


@pytest.mark.parametrize("method", [Method.ALLOCATE, Method.REFRESH, Method.CHANNEL_BIND, 0x0FF])
def test_other_methods_get_400(responder: BindingResponder, method: int) -> None:
    reply = answer(responder, encode_message(request(method, Username("alice"))))
    assert reply.method == method
    assert reply.message_class is MessageClass.ERROR
    assert reply.transaction_id == TID
    assert reply.get(ErrorCodeAttribute) == ErrorCodeAttribute(400, "Bad Request")
    assert reply.get(Software) == Software(SOFTWARE)


GARBAGE = [
    b"",
    b"\x00",
    b"hello, this is not STUN at all",
    bytes(20),  # no magic cookie
    # An RFC 3489 Binding request: right shape, no magic cookie.
    b"\x00\x01\x00\x00" + bytes(range(16)),
    # A header announcing 8 bytes of attributes that are not there.
    b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID,
    # XOR-MAPPED-ADDRESS with a 3-byte value: an attribute that does not decode.
    b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x20\x00\x03abc\x00",
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_is_dropped(responder: BindingResponder, data: bytes) -> None:
    assert responder(data, SOURCE) is None


@pytest.mark.parametrize(
    "message_class", [MessageClass.SUCCESS, MessageClass.ERROR, MessageClass.INDICATION]
)
def test_responses_and_indications_are_dropped(
    responder: BindingResponder, message_class: MessageClass
) -> None:
    message = Message(Method.BINDING, message_class, TID, (XorMappedAddress(*SOURCE),))
    assert responder(encode_message(message), SOURCE) is None
    # Not even an unknown comprehension-required attribute makes one answer (no 420).
    odd = Message(Method.BINDING, message_class, TID, (UnknownAttribute(0x7F01, b""),))
    assert responder(encode_message(odd), SOURCE) is None


def test_a_wrong_fingerprint_is_dropped(responder: BindingResponder) -> None:
    signed = bytearray(encode_signed(request(), fingerprint=True))
    signed[-1] ^= 0x01
    assert decode_message(bytes(signed)).get(Fingerprint) is not None
    assert responder(bytes(signed), SOURCE) is None


def test_a_fingerprint_over_other_bytes_is_dropped(responder: BindingResponder) -> None:
    # A valid FINGERPRINT of another message (different transaction id) is wrong here.
    other = encode_signed(
        Message(Method.BINDING, MessageClass.REQUEST, bytes(12)), fingerprint=True
    )
    header = encode_header(encode_message_type(Method.BINDING, MessageClass.REQUEST), 8, TID)
    forged = header + other[-8:]
    assert decode_message(forged).get(Fingerprint) is not None
    assert responder(forged, SOURCE) is None


@given(st.binary(max_size=200))
def test_any_bytes_yield_a_reply_or_none(data: bytes) -> None:
    reply = BindingResponder(SOFTWARE)(data, SOURCE)
    if reply is not None:
        message = decode_message(reply)
        assert message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR)
        assert verify_fingerprint(reply)


@given(st.binary(min_size=12, max_size=12))
def test_every_request_is_answered_with_its_transaction_id(transaction_id: bytes) -> None:
    data = encode_message(Message(Method.BINDING, MessageClass.REQUEST, transaction_id))
    reply = BindingResponder(SOFTWARE)(data, SOURCE)
    assert reply is not None
    assert decode_message(reply).transaction_id == transaction_id
