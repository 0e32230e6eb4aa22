"""RFC 5769 test vectors: decode, check every attribute, verify, re-encode.

The bytes are typed in from RFC 5769 §2.1-2.4. The first three vectors pad USERNAME and
SOFTWARE with spaces (0x20), which RFC 8489 §14 allows a receiver to see ("MUST be
ignored") but our encoder never sends (padding is zero). So for them re-encoding is
compared honestly in two steps: (1) our bytes equal the vector with its padding bytes
zeroed, up to the MESSAGE-INTEGRITY value (the HMAC and CRC then differ because they
cover the padding); (2) our bytes verify on their own. The §2.4 vector pads with zeros
and re-encodes to exactly the published bytes.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from aioice.turn import make_integrity_key

from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.attributes import (
    Attribute,
    Fingerprint,
    IceControlled,
    MessageIntegrity,
    Nonce,
    Priority,
    Realm,
    Software,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import long_term_key, short_term_key
from trelay.stun.integrity import (
    IntegrityAlgorithms,
    encode_signed,
    integrity_algorithms,
    verify_fingerprint,
    verify_integrity,
)
from trelay.stun.message import Message, decode_message

PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 §2.1 Sample Request.
SAMPLE_REQUEST = bytes.fromhex(
    "00010058"  # Request type and message length
    "2112a442"  # Magic cookie
    "b7e7a701bc34d686fa87dfae"  # Transaction ID
    "80220010"  # SOFTWARE attribute header
    "5354554e207465737420636c69656e74"  # "STUN test client"
    "00240004"  # PRIORITY attribute header
    "6e0001ff"  # ICE priority value
    "80290008"  # ICE-CONTROLLED attribute header
    "932ff9b151263b36"  # Pseudo-random tie breaker
    "00060009"  # USERNAME attribute header
    "6576746a3a68367659202020"  # "evtj:h6vY" and padding (3 spaces)
    "00080014"  # MESSAGE-INTEGRITY attribute header
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"  # HMAC-SHA1
    "80280004"  # FINGERPRINT attribute header
    "e57a3bcf"  # CRC32 fingerprint
)

# RFC 5769 §2.2 Sample IPv4 Response.
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"  # SOFTWARE attribute header
    "7465737420766563746f7220"  # "test vector" and padding (1 space)
    "00200008"  # XOR-MAPPED-ADDRESS attribute header
    "0001a147"  # family IPv4, xor'd port
    "e112a643"  # xor'd IPv4 address
    "00080014"
    "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004"
    "c07d4c96"
)

# RFC 5769 §2.3 Sample IPv6 Response.
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "7465737420766563746f7220"
    "00200014"  # XOR-MAPPED-ADDRESS attribute header
    "0002a147"  # family IPv6, xor'd port
    "0113a9faa5d3f179bc25f4b5bed2b9d9"  # xor'd IPv6 address
    "00080014"
    "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004"
    "c8fb0b4c"
)

# RFC 5769 §2.4 Sample Request with Long-Term Authentication.
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # マトリックス
LONG_TERM_REALM = "example.org"
LONG_TERM_PASSWORD = "TheMatrIX"  # "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep
LONG_TERM_NONCE = "f//499k954d6OL34oL9FSTvy64sA"
SAMPLE_LONG_TERM_REQUEST = bytes.fromhex(
    "00010060"
    "2112a442"
    "78ad3433c6ad72c029da412e"  # Transaction ID
    "00060012"  # USERNAME attribute header
    "e3839ee38388e383aae38383e382afe382b90000"  # 18 bytes and padding (2 zero bytes)
    "0015001c"  # NONCE attribute header
    "662f2f3439396b3935346436"  # "f//499k954d6"
    "4f4c33346f4c39465354767936347341"  # "OL34oL9FSTvy64sA"
    "0014000b"  # REALM attribute header
    "6578616d706c652e6f726700"  # "example.org" and padding (1 zero byte)
    "00080014"
    "f67024656dd64a3e02b8e0712e85c9a28ca89666"
)

_MI_TYPE = 0x0008


def zero_padding(data: bytes) -> bytes:
    """`data` with every attribute's padding bytes set to zero (what we would send)."""
    out = bytearray(data)
    offset = 20
    while offset < len(out):
        _, length = struct.unpack_from("!HH", out, offset)
        pad_start = offset + 4 + length
        pad = -length % 4
        out[pad_start : pad_start + pad] = bytes(pad)
        offset = pad_start + pad
    return bytes(out)


def integrity_offset(data: bytes) -> int:
    offset = 20
    while offset < len(data):
        kind, length = struct.unpack_from("!HH", data, offset)
        if kind == _MI_TYPE:
            return offset
        offset += 4 + length + (-length % 4)
    raise AssertionError("no MESSAGE-INTEGRITY")


def unsigned(message: Message) -> Message:
    kept = tuple(a for a in message.attributes if type(a) not in (MessageIntegrity, Fingerprint))
    return Message(message.method, message.message_class, message.transaction_id, kept)


def test_sample_request_decodes_to_every_attribute() -> None:
    message = decode_message(SAMPLE_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.REQUEST
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes == (
        Software("STUN test client"),
        Priority(0x6E0001FF),
        IceControlled(0x932FF9B151263B36),
        Username("evtj:h6vY"),
        MessageIntegrity(bytes.fromhex("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2")),
        Fingerprint(0xE57A3BCF),
    )


def test_sample_ipv4_response_decodes_to_every_attribute() -> None:
    message = decode_message(SAMPLE_IPV4_RESPONSE)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes == (
        Software("test vector"),
        XorMappedAddress("192.0.2.1", 32853),
        MessageIntegrity(bytes.fromhex("2b91f599fd9e90c38c7489f92af9ba53f06be7d7")),
        Fingerprint(0xC07D4C96),
    )


def test_sample_ipv6_response_decodes_to_every_attribute() -> None:
    message = decode_message(SAMPLE_IPV6_RESPONSE)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.attributes == (
        Software("test vector"),
        XorMappedAddress("2001:db8:1234:5678:11:2233:4455:6677", 32853),
        MessageIntegrity(bytes.fromhex("a382954e4be67bf11784c97c8292c275bfe3ed41")),
        Fingerprint(0xC8FB0B4C),
    )


def test_sample_long_term_request_decodes_to_every_attribute() -> None:
    message = decode_message(SAMPLE_LONG_TERM_REQUEST)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == bytes.fromhex("78ad3433c6ad72c029da412e")
    assert message.attributes == (
        Username(LONG_TERM_USERNAME),
        Nonce(LONG_TERM_NONCE),
        Realm(LONG_TERM_REALM),
        MessageIntegrity(bytes.fromhex("f67024656dd64a3e02b8e0712e85c9a28ca89666")),
    )


SHORT_TERM_VECTORS = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE]


@pytest.mark.parametrize("vector", SHORT_TERM_VECTORS)
def test_short_term_vectors_verify(vector: bytes) -> None:
    key = short_term_key(PASSWORD)
    assert key == PASSWORD.encode()
    assert verify_integrity(vector, key)
    assert verify_fingerprint(vector)
    assert integrity_algorithms(vector) == IntegrityAlgorithms(sha1=True, fingerprint=True)
    assert not verify_integrity(vector, key + b"x")


@pytest.mark.parametrize("vector", SHORT_TERM_VECTORS)
def test_short_term_vectors_reencode_up_to_their_space_padding(vector: bytes) -> None:
    message = decode_message(vector)
    ours = encode_signed(unsigned(message), short_term_key(PASSWORD))
    assert len(ours) == len(vector)
    end = integrity_offset(vector)
    # Everything the HMAC covers is identical once the vector's padding is zeroed...
    assert ours[: end + 4] == zero_padding(vector)[: end + 4]
    # ...and the padding is the only difference: the vector does pad with spaces.
    assert zero_padding(vector) != vector
    assert verify_integrity(ours, short_term_key(PASSWORD))
    assert verify_fingerprint(ours)
    assert decode_message(ours).attributes[:-2] == message.attributes[:-2]


def test_sample_request_with_zeroed_padding_no_longer_verifies() -> None:
    # The MAC covers the padding bytes as received: that is why we never re-encode.
    assert not verify_integrity(zero_padding(SAMPLE_REQUEST), short_term_key(PASSWORD))
    assert not verify_fingerprint(zero_padding(SAMPLE_REQUEST))


def test_long_term_key_matches_md5_of_user_realm_pass() -> None:
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    classic = hashlib.md5(
        f"{LONG_TERM_USERNAME}:{LONG_TERM_REALM}:{LONG_TERM_PASSWORD}".encode()
    ).digest()
    assert key == classic
    assert key == make_integrity_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)


def test_sample_long_term_request_verifies_and_has_no_fingerprint() -> None:
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    assert verify_integrity(SAMPLE_LONG_TERM_REQUEST, key)
    assert not verify_fingerprint(SAMPLE_LONG_TERM_REQUEST)
    assert integrity_algorithms(SAMPLE_LONG_TERM_REQUEST) == IntegrityAlgorithms(sha1=True)
    assert not verify_integrity(SAMPLE_LONG_TERM_REQUEST, short_term_key(PASSWORD))


def test_sample_long_term_request_reencodes_exactly() -> None:
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    message = unsigned(decode_message(SAMPLE_LONG_TERM_REQUEST))
    assert encode_signed(message, key, fingerprint=False) == SAMPLE_LONG_TERM_REQUEST


def test_sample_long_term_request_built_from_scratch() -> None:
    attributes: tuple[Attribute, ...] = (
        Username(LONG_TERM_USERNAME),
        Nonce(LONG_TERM_NONCE),
        Realm(LONG_TERM_REALM),
    )
    message = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        bytes.fromhex("78ad3433c6ad72c029da412e"),
        attributes,
    )
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    assert encode_signed(message, key, fingerprint=False) == SAMPLE_LONG_TERM_REQUEST


def test_sample_ipv4_response_built_from_scratch_matches_after_padding() -> None:
    message = Message(
        Method.BINDING,
        MessageClass.SUCCESS,
        TRANSACTION_ID,
        (Software("test vector"), XorMappedAddress("192.0.2.1", 32853)),
    )
    ours = encode_signed(message, short_term_key(PASSWORD))
    end = integrity_offset(SAMPLE_IPV4_RESPONSE)
    assert ours[: end + 4] == zero_padding(SAMPLE_IPV4_RESPONSE)[: end + 4]
