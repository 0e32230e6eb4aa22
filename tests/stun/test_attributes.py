"""Wire layout of every attribute class, checked against hand-written bytes.

Each expected TLV is written from the RFC's figure (type, length, value, zero padding):
RFC 8489 §14, RFC 8656 §18, RFC 5780 §7, RFC 7635 §6, RFC 8445 §16.1, RFC 6062 §6.2.
Then: wrong lengths, families and invalid UTF-8 raise StunDecodeError (400), and
reserved bits are ignored on receipt.
"""

from __future__ import annotations

import pytest

from trelay.stun import address_attributes as addr
from trelay.stun import attributes as attrs
from trelay.stun import auth_attributes as auth_attrs
from trelay.stun import error_attributes as error_attrs
from trelay.stun.attributes import Attribute, UnknownAttribute
from trelay.stun.codes import AddressFamily, MessageClass, Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import (
    ATTRIBUTE_CLASSES,
    Message,
    decode_message,
    encode_attribute,
    encode_message,
)

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
B32 = bytes(range(32))
B20 = bytes(range(20))

LAYOUTS: list[tuple[Attribute, str]] = [
    # RFC 8489 §14.1 MAPPED-ADDRESS: reserved byte, family, port, address.
    (addr.MappedAddress("192.0.2.1", 32853), "0001 0008 00 01 8055 c0000201"),
    (
        addr.MappedAddress("2001:db8::1", 3478),
        "0001 0014 00 02 0d96 20010db8000000000000000000000001",
    ),
    # §14.2 XOR-MAPPED-ADDRESS: port ^ 0x2112, IPv4 ^ cookie (RFC 5769 §2.2, §2.3 values).
    (addr.XorMappedAddress("192.0.2.1", 32853), "0020 0008 00 01 a147 e112a643"),
    (
        addr.XorMappedAddress("2001:db8:1234:5678:11:2233:4455:6677", 32853),
        "0020 0014 00 02 a147 0113a9faa5d3f179bc25f4b5bed2b9d9",
    ),
    # RFC 8656 §18.3, §18.5: same encoding as XOR-MAPPED-ADDRESS.
    (addr.XorPeerAddress("192.0.2.1", 32853), "0012 0008 00 01 a147 e112a643"),
    (addr.XorRelayedAddress("192.0.2.1", 32853), "0016 0008 00 01 a147 e112a643"),
    # RFC 8489 §14.15, RFC 5780 §7.3, §7.4: same encoding as MAPPED-ADDRESS.
    (addr.AlternateServer("192.0.2.1", 3478), "8023 0008 00 01 0d96 c0000201"),
    (addr.ResponseOrigin("192.0.2.1", 3478), "802b 0008 00 01 0d96 c0000201"),
    (addr.OtherAddress("192.0.2.2", 3479), "802c 0008 00 01 0d97 c0000202"),
    # Text attributes: UTF-8, padded with zeros.
    (attrs.Username("evtj:h6vY"), "0006 0009 6576746a3a68367659 000000"),
    (attrs.Realm("example.org"), "0014 000b 6578616d706c652e6f7267 00"),
    (attrs.Nonce("abcd"), "0015 0004 61626364"),
    (attrs.Software("test vector"), "8022 000b 7465737420766563746f72 00"),
    (attrs.AlternateDomain("a.example"), "8003 0009 612e6578616d706c65 000000"),
    (attrs.ThirdPartyAuthorization("as.example"), "802e 000a 61732e6578616d706c65 0000"),
    # Opaque bytes.
    (attrs.Data(b"\x01\x02\x03"), "0013 0003 010203 00"),
    (attrs.Padding(bytes(5)), "0026 0005 0000000000 000000"),
    (attrs.ReservationToken(b"\x01" * 8), "0022 0008 0101010101010101"),
    (attrs.MobilityTicket(b""), "8030 0000"),
    (attrs.MobilityTicket(b"abcde"), "8030 0005 6162636465 000000"),
    (attrs.UserHash(B32), "001e 0020" + B32.hex()),
    (attrs.MessageIntegrity(B20), "0008 0014" + B20.hex()),
    (attrs.MessageIntegritySha256(B32[:16]), "001c 0010" + B32[:16].hex()),
    # Flags without a value.
    (attrs.DontFragment(), "001a 0000"),
    (attrs.UseCandidate(), "0025 0000"),
    # Unsigned integers in network byte order.
    (attrs.Lifetime(600), "000d 0004 00000258"),
    (attrs.ConnectionId(0x01020304), "002a 0004 01020304"),
    (attrs.Priority(0x6E0001FF), "0024 0004 6e0001ff"),
    (attrs.IceControlled(0x932FF9B151263B36), "8029 0008 932ff9b151263b36"),
    (attrs.IceControlling(1), "802a 0008 0000000000000001"),
    (attrs.Fingerprint(0xE57A3BCF), "8028 0004 e57a3bcf"),
    # RFC 8656 §18.1 CHANNEL-NUMBER: 16-bit number, 16 bits RFFU.
    (attrs.ChannelNumber(0x4000), "000c 0004 4000 0000"),
    # RFC 5780 §7.5 RESPONSE-PORT: 16-bit port, 2 bytes of padding.
    (attrs.ResponsePort(3478), "0027 0004 0d96 0000"),
    # RFC 8656 §18.8 REQUESTED-TRANSPORT: protocol, 24 bits RFFU.
    (attrs.RequestedTransport(17), "0019 0004 11 000000"),
    # RFC 8656 §18.6, §18.11: family, 24 reserved bits.
    (attrs.RequestedAddressFamily(AddressFamily.IPV6), "0017 0004 02 000000"),
    (attrs.AdditionalAddressFamily(AddressFamily.IPV6), "8000 0004 02 000000"),
    (attrs.AdditionalAddressFamilyDraft(AddressFamily.IPV6), "8032 0004 02 000000"),
    # RFC 8656 §18.7 EVEN-PORT: one byte, R is its top bit; 3 bytes of padding.
    (attrs.EvenPort(reserve_next=True), "0018 0001 80 000000"),
    (attrs.EvenPort(reserve_next=False), "0018 0001 00 000000"),
    # RFC 5780 §7.2 CHANGE-REQUEST: 32 bits, A (change IP) = bit 29, B (port) = bit 30.
    (attrs.ChangeRequest(change_ip=True), "0003 0004 00000004"),
    (attrs.ChangeRequest(change_port=True), "0003 0004 00000002"),
    (attrs.ChangeRequest(change_ip=True, change_port=True), "0003 0004 00000006"),
    # RFC 8489 §14.8 ERROR-CODE: 21 reserved bits, class (3 bits), number (8), reason.
    (
        error_attrs.ErrorCodeAttribute(401, "Unauthenticated"),
        "0009 0013 0000 04 01 556e61757468656e74696361746564 00",
    ),
    # RFC 8656 §18.12 ADDRESS-ERROR-CODE: family, 13 reserved bits, class, number, reason.
    (
        error_attrs.AddressErrorCode(AddressFamily.IPV6, 440, "x"),
        "8001 0005 02 00 04 28 78 000000",
    ),
    (error_attrs.AddressErrorCode(AddressFamily.IPV4, 508), "8001 0004 01 00 05 08"),
    # RFC 8656 §18.13 ICMP: 16 reserved bits, type (7 bits), code (9 bits), error data.
    # Type 3 code 4 (fragmentation needed): 3 << 9 | 4 = 0x0604; MTU 1400 = 0x578.
    (error_attrs.Icmp(3, 4, 1400), "8004 0008 0000 0604 00000578"),
    (error_attrs.Icmp(127, 511), "8004 0008 0000 ffff 00000000"),
    # RFC 8489 §14.13 UNKNOWN-ATTRIBUTES: 16-bit types, normal padding.
    (error_attrs.UnknownAttributes((0x0003, 0x0026, 0x8004)), "000a 0006 0003 0026 8004 0000"),
    # RFC 8489 §14.12 PASSWORD-ALGORITHM: algorithm, parameters length, parameters padded.
    (auth_attrs.PasswordAlgorithm(2), "001d 0004 0002 0000"),
    (auth_attrs.PasswordAlgorithm(1, b"\xaa"), "001d 0008 0001 0001 aa000000"),
    # §14.11 PASSWORD-ALGORITHMS: a list of the same entries.
    (auth_attrs.PasswordAlgorithms(((2, b""), (1, b""))), "8002 0008 0002 0000 0001 0000"),
    # RFC 7635 §6.2 ACCESS-TOKEN: nonce_length (16), nonce, encrypted block.
    (
        auth_attrs.AccessToken(b"\x01" * 12, b"\xee\xff"),
        "001b 0010 000c 010101010101010101010101 eeff",
    ),
    # Unknown types are kept verbatim.
    (UnknownAttribute(0x7FFF, b"\xab"), "7fff 0001 ab 000000"),
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _name(case: tuple[Attribute, str]) -> str:
    return f"{type(case[0]).__name__}-{case[1][:9]}"


@pytest.mark.parametrize("attribute,expected", LAYOUTS, ids=[_name(c) for c in LAYOUTS])
def test_encode_layout(attribute: Attribute, expected: str) -> None:
    assert encode_attribute(attribute, TID) == _hex(expected)


@pytest.mark.parametrize("attribute,expected", LAYOUTS, ids=[_name(c) for c in LAYOUTS])
def test_decode_layout_in_a_message(attribute: Attribute, expected: str) -> None:
    body = _hex(expected)
    data = encode_message(Message(Method.BINDING, MessageClass.REQUEST, TID)) + body
    data = data[:2] + len(body).to_bytes(2, "big") + data[4:]
    assert decode_message(data).attributes == (attribute,)


def test_every_attribute_class_has_a_layout_case() -> None:
    covered = {type(a) for a, _ in LAYOUTS}
    assert set(ATTRIBUTE_CLASSES) <= covered


def _decode(cls: type[Attribute], value: str) -> Attribute:
    return cls.decode_value(_hex(value), TID)


WRONG_LENGTHS: list[tuple[type[Attribute], str]] = [
    (addr.MappedAddress, "0001 0d96 c00002"),
    (addr.XorMappedAddress, "0001 0d96 c0000201 00"),
    (addr.XorPeerAddress, "0002 0d96" + "00" * 15),
    (attrs.ReservationToken, "01" * 7),
    (attrs.UserHash, "00" * 31),
    (attrs.MessageIntegrity, "00" * 19),
    (attrs.MessageIntegritySha256, "00" * 12),
    (attrs.MessageIntegritySha256, "00" * 18),
    (attrs.MessageIntegritySha256, "00" * 36),
    (attrs.DontFragment, "00"),
    (attrs.UseCandidate, "00"),
    (attrs.Lifetime, "000258"),
    (attrs.Priority, "0000000001"),
    (attrs.IceControlled, "00000001"),
    (attrs.IceControlling, "00" * 9),
    (attrs.Fingerprint, "00" * 8),
    (attrs.ConnectionId, ""),
    (attrs.ChannelNumber, "4000"),
    (attrs.ResponsePort, "0d96"),
    (attrs.RequestedTransport, "11"),
    (attrs.RequestedAddressFamily, "01"),
    (attrs.AdditionalAddressFamily, "0200000000"),
    (attrs.EvenPort, ""),
    (attrs.EvenPort, "80000000"),
    (attrs.ChangeRequest, "06"),
    (error_attrs.ErrorCodeAttribute, "000004"),
    (error_attrs.AddressErrorCode, "010004"),
    (error_attrs.Icmp, "00000604"),
    (error_attrs.UnknownAttributes, "000300"),
    (auth_attrs.PasswordAlgorithm, "0002"),
    (auth_attrs.PasswordAlgorithm, "0002 0000 0001 0000"),  # two entries
    (auth_attrs.PasswordAlgorithm, "0001 0008 aa"),  # parameters overrun
    (auth_attrs.PasswordAlgorithm, "0001 0001 aa"),  # parameter padding overruns
    (auth_attrs.PasswordAlgorithms, "0002 0000 0001"),
    (auth_attrs.AccessToken, "00"),
    (auth_attrs.AccessToken, "000d 010101010101010101010101"),  # nonce overruns
]


@pytest.mark.parametrize("cls,value", WRONG_LENGTHS)
def test_wrong_lengths_are_rejected(cls: type[Attribute], value: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        _decode(cls, value)
    assert info.value.error_code == 400


@pytest.mark.parametrize(
    "cls,value",
    [
        (addr.MappedAddress, "0003 0d96 c0000201"),
        (addr.MappedAddress, "0001 0d96" + "00" * 16),  # IPv4 family, IPv6 length
        (addr.XorMappedAddress, "0002 0d96 c0000201"),  # IPv6 family, IPv4 length
        (addr.AlternateServer, "0000 0d96 c0000201"),
        (attrs.RequestedAddressFamily, "03000000"),
        (attrs.AdditionalAddressFamily, "00000000"),
        (error_attrs.AddressErrorCode, "03000508"),
    ],
)
def test_unknown_families_are_rejected(cls: type[Attribute], value: str) -> None:
    with pytest.raises(StunDecodeError):
        _decode(cls, value)


TEXT_CLASSES: list[type[Attribute]] = [
    attrs.Username,
    attrs.Realm,
    attrs.Nonce,
    attrs.Software,
    attrs.AlternateDomain,
    attrs.ThirdPartyAuthorization,
]


@pytest.mark.parametrize("cls", TEXT_CLASSES)
@pytest.mark.parametrize("bad", ["ff", "c328", "e28228", "f0288c28", "ed a0 80"])
def test_invalid_utf8_is_rejected(cls: type[Attribute], bad: str) -> None:
    with pytest.raises(StunDecodeError, match="UTF-8"):
        _decode(cls, "61" + bad)


@pytest.mark.parametrize("cls", [error_attrs.ErrorCodeAttribute, error_attrs.AddressErrorCode])
def test_invalid_utf8_reason_is_rejected(cls: type[Attribute]) -> None:
    with pytest.raises(StunDecodeError, match="UTF-8"):
        _decode(cls, "01000401 ff")


@pytest.mark.parametrize(
    "cls,limit",
    [
        (attrs.Username, 763),  # RFC 8489 §14.3: parse up to 763 bytes
        (attrs.Realm, 763),
        (attrs.Nonce, 763),
        (attrs.Software, 763),
        (attrs.AlternateDomain, 255),
    ],
)
def test_text_byte_limits(cls: type[Attribute], limit: int) -> None:
    assert _decode(cls, "61" * limit) == cls("a" * limit)  # type: ignore[call-arg]
    with pytest.raises(StunDecodeError):
        _decode(cls, "61" * (limit + 1))


@pytest.mark.parametrize("value", ["00000201", "00000764", "00000700", "0000 0100"])
def test_invalid_error_classes_and_numbers_are_rejected(value: str) -> None:
    with pytest.raises(StunDecodeError):
        _decode(error_attrs.ErrorCodeAttribute, value)


RESERVED_BITS: list[tuple[type[Attribute], str, Attribute]] = [
    (addr.MappedAddress, "ff 01 8055 c0000201", addr.MappedAddress("192.0.2.1", 32853)),
    (addr.XorMappedAddress, "ff 01 a147 e112a643", addr.XorMappedAddress("192.0.2.1", 32853)),
    (attrs.ChannelNumber, "4000 ffff", attrs.ChannelNumber(0x4000)),
    (attrs.ResponsePort, "0d96 ffff", attrs.ResponsePort(3478)),
    (attrs.RequestedTransport, "11 ffffff", attrs.RequestedTransport(17)),
    (
        attrs.RequestedAddressFamily,
        "01 ffffff",
        attrs.RequestedAddressFamily(AddressFamily.IPV4),
    ),
    (
        attrs.AdditionalAddressFamily,
        "02 ffffff",
        attrs.AdditionalAddressFamily(AddressFamily.IPV6),
    ),
    (attrs.EvenPort, "7f", attrs.EvenPort(reserve_next=False)),
    (attrs.EvenPort, "ff", attrs.EvenPort(reserve_next=True)),
    (attrs.ChangeRequest, "fffffff9", attrs.ChangeRequest()),
    (attrs.ChangeRequest, "ffffffff", attrs.ChangeRequest(True, True)),
    (error_attrs.ErrorCodeAttribute, "ffff fc 26", error_attrs.ErrorCodeAttribute(438)),
    (
        error_attrs.AddressErrorCode,
        "02 ff fd 08",
        error_attrs.AddressErrorCode(AddressFamily.IPV6, 508),
    ),
    (error_attrs.Icmp, "ffff 0604 00000578", error_attrs.Icmp(3, 4, 1400)),
    (auth_attrs.PasswordAlgorithm, "0001 0001 aa ffffff", auth_attrs.PasswordAlgorithm(1, b"\xaa")),
]


@pytest.mark.parametrize("cls,value,expected", RESERVED_BITS)
def test_reserved_bits_are_ignored(cls: type[Attribute], value: str, expected: Attribute) -> None:
    assert _decode(cls, value) == expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: error_attrs.Icmp(128, 0),
        lambda: error_attrs.Icmp(0, 512),
        lambda: error_attrs.Icmp(0, 0, 1 << 32),
        lambda: error_attrs.ErrorCodeAttribute(700),
        lambda: error_attrs.AddressErrorCode(AddressFamily.IPV4, 299),
        lambda: attrs.Lifetime(1 << 32),
        lambda: attrs.ChannelNumber(1 << 16),
        lambda: auth_attrs.AccessToken(bytes(1 << 16), b""),
        lambda: addr.MappedAddress("192.0.2.1", 65536),
    ],
)
def test_out_of_range_values_are_refused_at_construction(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
