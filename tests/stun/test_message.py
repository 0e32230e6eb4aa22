"""Unit tests of the STUN header and attribute list (trelay.stun.message, RFC 8489 §5, §14)."""

from __future__ import annotations

import struct

import pytest

from trelay.stun.address_attributes import XorMappedAddress, XorPeerAddress
from trelay.stun.attributes import (
    Data,
    Fingerprint,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Software,
    UnknownAttribute,
    Username,
)
from trelay.stun.codes import MAGIC_COOKIE, MessageClass, Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import (
    ATTRIBUTE_CLASS_BY_TYPE,
    Message,
    decode_message,
    decode_message_type,
    encode_message,
    encode_message_type,
)

TID = bytes(range(1, 13))


def reference_message_type(method: int, message_class: int) -> int:
    """The RFC 8489 §5 figure, bit by bit: M11..M7 C1 M6..M4 C0 M3..M0 (bit 13 down to 0)."""
    method_bits = [(method >> i) & 1 for i in range(12)]
    positions = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13]  # where M0..M11 go
    value = sum(bit << pos for bit, pos in zip(method_bits, positions, strict=True))
    return value | (message_class & 1) << 4 | (message_class >> 1) << 8


def header(message_type: int, length: int, cookie: int = MAGIC_COOKIE) -> bytes:
    return struct.pack("!HHI12s", message_type, length, cookie, TID)


def tlv(kind: int, value: bytes, padding: bytes | None = None) -> bytes:
    pad = bytes(-len(value) % 4) if padding is None else padding
    return struct.pack("!HH", kind, len(value)) + value + pad


def message_bytes(*tlvs: bytes, message_type: int = 0x0001) -> bytes:
    body = b"".join(tlvs)
    return header(message_type, len(body)) + body


# --- the method / class interleave ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "message_class", "expected"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.INDICATION, 0x0011),
        (Method.BINDING, MessageClass.SUCCESS, 0x0101),
        (Method.BINDING, MessageClass.ERROR, 0x0111),
        (Method.ALLOCATE, MessageClass.REQUEST, 0x0003),
        (Method.ALLOCATE, MessageClass.SUCCESS, 0x0103),
        (Method.ALLOCATE, MessageClass.ERROR, 0x0113),
        (Method.REFRESH, MessageClass.REQUEST, 0x0004),
        (Method.SEND, MessageClass.INDICATION, 0x0016),
        (Method.DATA, MessageClass.INDICATION, 0x0017),
        (Method.CREATE_PERMISSION, MessageClass.SUCCESS, 0x0108),
        (Method.CHANNEL_BIND, MessageClass.SUCCESS, 0x0109),
        (Method.CHANNEL_BIND, MessageClass.ERROR, 0x0119),
        (Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, 0x001C),
    ],
)
def test_message_type_hand_computed(
    method: Method, message_class: MessageClass, expected: int
) -> None:
    assert encode_message_type(method, message_class) == expected
    assert decode_message_type(expected) == (method, message_class)
    data = encode_message(Message(method, message_class, TID))
    assert data[:2] == expected.to_bytes(2, "big")
    decoded = decode_message(data)
    assert (decoded.method, decoded.message_class) == (method, message_class)
    assert isinstance(decoded.method, Method)


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("message_class", list(MessageClass))
def test_every_method_and_class(method: Method, message_class: MessageClass) -> None:
    message_type = encode_message_type(method, message_class)
    assert message_type == reference_message_type(method, message_class)
    assert message_type & 0xC000 == 0
    assert decode_message_type(message_type) == (method, message_class)
    decoded = decode_message(header(message_type, 0))
    assert decoded == Message(method, message_class, TID)


def test_interleave_is_a_bijection_on_all_12_bit_methods() -> None:
    seen = set()
    for method in range(0x1000):
        for message_class in MessageClass:
            message_type = encode_message_type(method, message_class)
            assert message_type == reference_message_type(method, message_class)
            assert decode_message_type(message_type) == (method, message_class)
            seen.add(message_type)
    assert seen == set(range(0x4000))


def test_unknown_method_is_kept_as_a_number() -> None:
    data = encode_message(Message(0x0ABC, MessageClass.REQUEST, TID))
    decoded = decode_message(data)
    assert decoded.method == 0x0ABC
    assert not isinstance(decoded.method, Method)


def test_header_layout() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, (Lifetime(600),))
    data = encode_message(message)
    assert data[:20] == bytes.fromhex("0001 0008 2112a442") + TID
    assert data[20:] == bytes.fromhex("000d 0004 00000258")


def test_message_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        Message(Method.BINDING, MessageClass.REQUEST, b"short")
    with pytest.raises(ValueError, match="12 bits"):
        Message(0x1000, MessageClass.REQUEST, TID)


# --- rejection ------------------------------------------------------------------------------


def reject(data: bytes, reason: str) -> None:
    with pytest.raises(StunDecodeError, match=reason) as info:
        decode_message(data)
    assert info.value.error_code == 400


@pytest.mark.parametrize("top", [0x4001, 0x8001, 0xC001])
def test_rejects_top_bits_set(top: int) -> None:
    reject(header(top, 0), "most significant bits")


def test_rejects_short_header() -> None:
    reject(b"", "shorter than")
    reject(header(0x0001, 0)[:19], "shorter than")


def test_rejects_missing_magic_cookie() -> None:
    reject(header(0x0001, 0, cookie=0x12345678), "magic cookie")


def test_rejects_length_not_multiple_of_4() -> None:
    reject(header(0x0001, 2) + b"\x00\x00", "length field 2")


@pytest.mark.parametrize(("length", "body"), [(8, 4), (4, 8), (0, 4), (4, 0)])
def test_rejects_length_mismatch(length: int, body: int) -> None:
    reject(header(0x0001, length) + bytes(body), f"length field {length}")


def test_rejects_truncated_tlv_value() -> None:
    # USERNAME declares 8 bytes of value but the message ends after 4.
    reject(message_bytes(struct.pack("!HH", 0x0006, 8) + b"abcd"), "0x0006 overruns")


def test_rejects_padding_past_the_end() -> None:
    # A 5-byte value needs 3 bytes of padding that are not there.
    reject(message_bytes(struct.pack("!HH", 0x0006, 5) + b"abcd"), "overruns")


def test_rejects_attribute_overrunning_the_message() -> None:
    data = message_bytes(tlv(0x0006, b"user"), struct.pack("!HH", 0x8022, 0xFFFF) + b"1234")
    reject(data, "0x8022 overruns")


def test_rejects_attribute_after_fingerprint() -> None:
    fp = tlv(0x8028, b"\x00\x00\x00\x00")
    reject(message_bytes(fp, tlv(0x8022, b"late")), "follows FINGERPRINT")
    reject(message_bytes(fp, fp), "follows FINGERPRINT")
    reject(message_bytes(fp, tlv(0x7FF1, b"")), "follows FINGERPRINT")


def test_rejects_bad_attribute_value() -> None:
    reject(message_bytes(tlv(0x000D, b"\x00\x00\x02")), "Lifetime")
    reject(message_bytes(tlv(0x0006, b"\xff\xfe")), "not UTF-8")


def test_accepts_nonzero_padding() -> None:
    # RFC 8489 §14: padding bits are ignored (the RFC 5769 vectors pad with spaces).
    decoded = decode_message(message_bytes(tlv(0x8022, b"abc", padding=b" ")))
    assert decoded.attributes == (Software("abc"),)


# --- integrity and fingerprint positions (RFC 8489 §14.5-14.7) -------------------------------


def test_attributes_after_message_integrity_are_ignored() -> None:
    mi = tlv(0x0008, bytes(20))
    mi256 = tlv(0x001C, bytes(32))
    fp = tlv(0x8028, bytes(4))
    data = message_bytes(
        tlv(0x0006, b"user"), mi, tlv(0x8022, b"ignored"), mi256, tlv(0x000D, bytes(4)), fp
    )
    assert decode_message(data).attributes == (
        Username("user"),
        MessageIntegrity(bytes(20)),
        MessageIntegritySha256(bytes(32)),
        Fingerprint(0),
    )


def test_only_fingerprint_counts_after_message_integrity_sha256() -> None:
    data = message_bytes(tlv(0x001C, bytes(16)), tlv(0x0008, bytes(20)), tlv(0x8028, bytes(4)))
    assert decode_message(data).attributes == (MessageIntegritySha256(bytes(16)), Fingerprint(0))


# --- unknown and repeated attributes ---------------------------------------------------------

UNKNOWN_TYPES = (0x0002, 0x8005, 0x7FFF, 0xC001, 0x0031)


def test_unknown_types_are_unknown_to_the_codec() -> None:
    assert not set(UNKNOWN_TYPES) & set(ATTRIBUTE_CLASS_BY_TYPE)


def test_unknown_attributes_kept_in_order() -> None:
    data = message_bytes(
        tlv(0x0002, b"\x01"),
        tlv(0x0006, b"alice"),
        tlv(0x8005, b""),
        tlv(0x7FFF, b"abcd"),
        tlv(0xC001, b"xyz"),
        tlv(0x0031, b"12345"),
    )
    message = decode_message(data)
    assert message.attributes == (
        UnknownAttribute(0x0002, b"\x01"),
        Username("alice"),
        UnknownAttribute(0x8005, b""),
        UnknownAttribute(0x7FFF, b"abcd"),
        UnknownAttribute(0xC001, b"xyz"),
        UnknownAttribute(0x0031, b"12345"),
    )
    assert message.unknown_comprehension_required() == (0x0002, 0x7FFF, 0x0031)
    assert encode_message(message) == data


def test_only_optional_unknown_attributes_need_no_420() -> None:
    message = decode_message(message_bytes(tlv(0x8005, b"a"), tlv(0xFFFF, b"")))
    assert message.unknown_comprehension_required() == ()
    assert len(message.get_all(UnknownAttribute)) == 2


def test_repeated_attributes_kept_in_order_and_get() -> None:
    peers = (XorPeerAddress("192.0.2.1", 1000), XorPeerAddress("2001:db8::1", 2000))
    message = Message(
        Method.CREATE_PERMISSION,
        MessageClass.REQUEST,
        TID,
        (peers[0], Data(b"one"), peers[1], Data(b"two"), XorPeerAddress("192.0.2.1", 1000)),
    )
    decoded = decode_message(encode_message(message))
    assert decoded == message
    assert decoded.get(XorPeerAddress) == peers[0]
    assert decoded.get_all(XorPeerAddress) == (*peers, peers[0])
    assert decoded.get(Data) == Data(b"one")
    assert decoded.get_all(Data) == (Data(b"one"), Data(b"two"))
    # Absent classes, including a sibling address class: exact-class lookup.
    assert decoded.get(XorMappedAddress) is None
    assert decoded.get_all(Lifetime) == ()


def test_with_attributes_appends() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, (Lifetime(1),))
    extended = message.with_attributes(Software("x"), Lifetime(2))
    assert extended.attributes == (Lifetime(1), Software("x"), Lifetime(2))
    assert message.attributes == (Lifetime(1),)


def test_encode_rejects_oversized_body() -> None:
    message = Message(Method.SEND, MessageClass.INDICATION, TID, (Data(bytes(40000)),) * 2)
    with pytest.raises(ValueError, match="65535"):
        encode_message(message)
    with pytest.raises(ValueError, match="65535"):
        encode_message(Message(Method.SEND, MessageClass.INDICATION, TID, (Data(bytes(0x10000)),)))
