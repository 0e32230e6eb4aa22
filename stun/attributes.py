"""Typed STUN attributes: one frozen dataclass per attribute, each encoding its own value.

Owns the value layout of every attribute that RFC 8489, RFC 8656, RFC 6062, RFC 5780,
RFC 7635, RFC 8445 and RFC 8016 define, by the shape of their values (text, opaque bytes, flags,
integers); the address attributes live in `trelay.stun.address_attributes`, the error ones
in `trelay.stun.error_attributes`, the password algorithms and ACCESS-TOKEN in
`trelay.stun.auth_attributes`.
Each class has a `TYPE` and two halves of its codec:

- `encode_value(transaction_id)` returns the value bytes without the TLV header or padding;
- `decode_value(value, transaction_id)` parses them or raises `StunDecodeError` (400).

Invariants: a decoded attribute re-encodes to a value that decodes to an equal attribute
(reserved bits are dropped on decode and sent as zero); lengths that the RFCs fix are
checked exactly; text must be UTF-8 and within the RFC's byte limit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from trelay.stun.codes import AddressFamily, AttributeType
from trelay.stun.errors import StunDecodeError


class Attribute:
    """Base of every attribute class; subclasses are frozen, slotted dataclasses."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def encode_value(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        raise NotImplementedError


def expect_length(name: str, value: bytes, *lengths: int) -> None:
    """Raise 400 unless `value` has one of the lengths the RFC fixes for `name`.

    The decoders every request meets check the length inline and call this only to
    raise (issue 13 part 4: a call per attribute of every request)."""
    if len(value) not in lengths:
        raise StunDecodeError(f"{name}: length {len(value)}, expected {lengths}")


def decode_text(name: str, value: bytes, max_bytes: int) -> str:
    """UTF-8 text with the RFC's byte bound (the character bounds exist to bound bytes)."""
    if len(value) > max_bytes:
        raise StunDecodeError(f"{name}: {len(value)} bytes, at most {max_bytes} allowed")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError(f"{name}: not UTF-8") from exc


def decode_error_code(name: str, class_byte: int, number: int) -> int:
    """Class (3 bits) and number (0-99) into a code 300-699 (RFC 8489 §14.8)."""
    error_class = class_byte & 0x07
    if not 3 <= error_class <= 6 or number > 99:
        raise StunDecodeError(f"{name}: invalid class {error_class} / number {number}")
    return error_class * 100 + number


def check_error_code(code: int) -> None:
    if not 300 <= code <= 699:
        raise ValueError(f"error code {code} outside 300-699")


# --- text attributes (RFC 8489 §14.3, 14.9, 14.10, 14.14, 14.12; RFC 7635 §6.1) ---------


@dataclass(frozen=True, slots=True)
class _Text(Attribute):
    value: str
    MAX_BYTES: ClassVar[int] = 763

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) <= cls.MAX_BYTES and value.isascii():
            return cls(value.decode("ascii"))  # every request's USERNAME, REALM, NONCE
        return cls(decode_text(cls.__name__, value, cls.MAX_BYTES))


@dataclass(frozen=True, slots=True)
class Username(_Text):
    """USERNAME (RFC 8489 §14.3): sent as fewer than 509 bytes; receivers "MUST be able
    to parse a UTF-8-encoded sequence of 763 or fewer octets" (RFC 5389 compatibility)."""

    TYPE: ClassVar[int] = AttributeType.USERNAME


@dataclass(frozen=True, slots=True)
class Realm(_Text):
    """REALM (RFC 8489 §14.9): fewer than 128 characters, at most 763 bytes."""

    TYPE: ClassVar[int] = AttributeType.REALM


@dataclass(frozen=True, slots=True)
class Nonce(_Text):
    """NONCE (RFC 8489 §14.10): fewer than 128 characters, at most 763 bytes."""

    TYPE: ClassVar[int] = AttributeType.NONCE


@dataclass(frozen=True, slots=True)
class Software(_Text):
    """SOFTWARE (RFC 8489 §14.14)."""

    TYPE: ClassVar[int] = AttributeType.SOFTWARE


@dataclass(frozen=True, slots=True)
class AlternateDomain(_Text):
    """ALTERNATE-DOMAIN (RFC 8489 §14.16): a host name of at most 255 bytes."""

    TYPE: ClassVar[int] = AttributeType.ALTERNATE_DOMAIN
    MAX_BYTES: ClassVar[int] = 255


@dataclass(frozen=True, slots=True)
class ThirdPartyAuthorization(_Text):
    """THIRD-PARTY-AUTHORIZATION (RFC 7635 §6.1): the authorization server's name."""

    TYPE: ClassVar[int] = AttributeType.THIRD_PARTY_AUTHORIZATION


# --- opaque byte attributes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opaque(Attribute):
    value: bytes
    LENGTHS: ClassVar[tuple[int, ...]] = ()  # empty: any length

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        lengths = cls.LENGTHS
        if lengths and len(value) not in lengths:
            expect_length(cls.__name__, value, *lengths)  # raises, naming the lengths
        return cls(bytes(value))


@dataclass(frozen=True, slots=True)
class Data(_Opaque):
    """DATA (RFC 8656 §14.4): the application payload of Send/Data indications."""

    TYPE: ClassVar[int] = AttributeType.DATA


@dataclass(frozen=True, slots=True)
class Padding(_Opaque):
    """PADDING (RFC 5780 §7.6)."""

    TYPE: ClassVar[int] = AttributeType.PADDING


@dataclass(frozen=True, slots=True)
class ReservationToken(_Opaque):
    """RESERVATION-TOKEN (RFC 8656 §14.9): 8 bytes."""

    TYPE: ClassVar[int] = AttributeType.RESERVATION_TOKEN
    LENGTHS: ClassVar[tuple[int, ...]] = (8,)


@dataclass(frozen=True, slots=True)
class MobilityTicket(_Opaque):
    """MOBILITY-TICKET (RFC 8016 §4): opaque to the client, any length. Empty in an
    Allocate that asks for mobility; the server's ticket in responses and in a Refresh
    from a client whose address changed."""

    TYPE: ClassVar[int] = AttributeType.MOBILITY_TICKET


@dataclass(frozen=True, slots=True)
class UserHash(_Opaque):
    """USERHASH (RFC 8489 §14.4): SHA-256 of the username and realm, 32 bytes."""

    TYPE: ClassVar[int] = AttributeType.USERHASH
    LENGTHS: ClassVar[tuple[int, ...]] = (32,)


@dataclass(frozen=True, slots=True)
class MessageIntegrity(_Opaque):
    """MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1, 20 bytes."""

    TYPE: ClassVar[int] = AttributeType.MESSAGE_INTEGRITY
    LENGTHS: ClassVar[tuple[int, ...]] = (20,)


@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(_Opaque):
    """MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): HMAC-SHA256 truncated to 16..32 bytes."""

    TYPE: ClassVar[int] = AttributeType.MESSAGE_INTEGRITY_SHA256
    LENGTHS: ClassVar[tuple[int, ...]] = (16, 20, 24, 28, 32)


# --- flag attributes (no value) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Empty(Attribute):
    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.__name__, value, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class DontFragment(_Empty):
    """DONT-FRAGMENT (RFC 8656 §14.8)."""

    TYPE: ClassVar[int] = AttributeType.DONT_FRAGMENT


@dataclass(frozen=True, slots=True)
class UseCandidate(_Empty):
    """USE-CANDIDATE (RFC 8445 §16.1)."""

    TYPE: ClassVar[int] = AttributeType.USE_CANDIDATE


# --- unsigned integer attributes --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unsigned(Attribute):
    value: int
    FORMAT: ClassVar[struct.Struct] = struct.Struct("!I")

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << (8 * self.FORMAT.size):
            raise ValueError(f"{type(self).__name__}: {self.value} out of range")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.FORMAT.pack(self.value)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        layout = cls.FORMAT
        if len(value) != layout.size:
            expect_length(cls.__name__, value, layout.size)  # raises
        return cls(layout.unpack(value)[0])


@dataclass(frozen=True, slots=True)
class Lifetime(_Unsigned):
    """LIFETIME (RFC 8656 §14.2): seconds."""

    TYPE: ClassVar[int] = AttributeType.LIFETIME


@dataclass(frozen=True, slots=True)
class ConnectionId(_Unsigned):
    """CONNECTION-ID (RFC 6062 §6.2.1)."""

    TYPE: ClassVar[int] = AttributeType.CONNECTION_ID


@dataclass(frozen=True, slots=True)
class Priority(_Unsigned):
    """PRIORITY (RFC 8445 §16.1)."""

    TYPE: ClassVar[int] = AttributeType.PRIORITY


@dataclass(frozen=True, slots=True)
class IceControlled(_Unsigned):
    """ICE-CONTROLLED (RFC 8445 §16.1): the 64-bit tie-breaker."""

    TYPE: ClassVar[int] = AttributeType.ICE_CONTROLLED
    FORMAT: ClassVar[struct.Struct] = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class IceControlling(_Unsigned):
    """ICE-CONTROLLING (RFC 8445 §16.1): the 64-bit tie-breaker."""

    TYPE: ClassVar[int] = AttributeType.ICE_CONTROLLING
    FORMAT: ClassVar[struct.Struct] = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Fingerprint(_Unsigned):
    """FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554E."""

    TYPE: ClassVar[int] = AttributeType.FINGERPRINT


# --- integers followed by reserved bits ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leading(Attribute):
    """A value in the first bytes of a 4-byte field; the rest is RFFU (sent 0, ignored)."""

    value: int
    SIZE: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << (8 * self.SIZE):
            raise ValueError(f"{type(self).__name__}: {self.value} out of range")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.to_bytes(self.SIZE, "big") + bytes(4 - self.SIZE)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            expect_length(cls.__name__, value, 4)  # raises
        return cls(int.from_bytes(value[: cls.SIZE], "big"))


@dataclass(frozen=True, slots=True)
class ChannelNumber(_Leading):
    """CHANNEL-NUMBER (RFC 8656 §14.1): 16-bit number, 16 bits RFFU."""

    TYPE: ClassVar[int] = AttributeType.CHANNEL_NUMBER
    SIZE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class ResponsePort(_Leading):
    """RESPONSE-PORT (RFC 5780 §7.5): 16-bit port, 16 bits reserved."""

    TYPE: ClassVar[int] = AttributeType.RESPONSE_PORT
    SIZE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class RequestedTransport(_Leading):
    """REQUESTED-TRANSPORT (RFC 8656 §14.7): IANA protocol number (17 UDP, 6 TCP)."""

    TYPE: ClassVar[int] = AttributeType.REQUESTED_TRANSPORT


@dataclass(frozen=True, slots=True)
class _Family(Attribute):
    family: AddressFamily

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.__name__, value, 4)
        try:
            return cls(AddressFamily(value[0]))
        except ValueError as exc:
            raise StunDecodeError(f"{cls.__name__}: unknown family {value[0]}") from exc


@dataclass(frozen=True, slots=True)
class RequestedAddressFamily(_Family):
    """REQUESTED-ADDRESS-FAMILY (RFC 8656 §14.10)."""

    TYPE: ClassVar[int] = AttributeType.REQUESTED_ADDRESS_FAMILY


@dataclass(frozen=True, slots=True)
class AdditionalAddressFamily(_Family):
    """ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §14.11): only IPv6 is meaningful."""

    TYPE: ClassVar[int] = AttributeType.ADDITIONAL_ADDRESS_FAMILY


@dataclass(frozen=True, slots=True)
class AdditionalAddressFamilyDraft(_Family):
    """ADDITIONAL-ADDRESS-FAMILY at the turnbis drafts' code point 0x8032, as coturn
    sends it (its draft-era ADDRESS-ERROR-CODE was 0x8033); same layout as RFC 8656's."""

    TYPE: ClassVar[int] = AttributeType.ADDITIONAL_ADDRESS_FAMILY_DRAFT


@dataclass(frozen=True, slots=True)
class EvenPort(Attribute):
    """EVEN-PORT (RFC 8656 §14.6): one byte, R bit asks to reserve the next port."""

    TYPE: ClassVar[int] = AttributeType.EVEN_PORT
    reserve_next: bool = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"\x80" if self.reserve_next else b"\x00"

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("EvenPort", value, 1)
        return cls(bool(value[0] & 0x80))


@dataclass(frozen=True, slots=True)
class ChangeRequest(Attribute):
    """CHANGE-REQUEST (RFC 5780 §7.2): flags A (change IP) and B (change port)."""

    TYPE: ClassVar[int] = AttributeType.CHANGE_REQUEST
    change_ip: bool = False
    change_port: bool = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        return (self.change_ip << 2 | self.change_port << 1).to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("ChangeRequest", value, 4)
        return cls(bool(value[3] & 0x04), bool(value[3] & 0x02))


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute type this codec does not know, kept with its raw value."""

    type: int
    value: bytes

    @property
    def TYPE(self) -> int:  # type: ignore[override]
        return self.type

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value
