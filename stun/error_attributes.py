"""STUN attributes that report errors: ERROR-CODE and its relatives (RFC 8489 §14.8, §14.13;
RFC 8656 §18.12 ADDRESS-ERROR-CODE, §18.13 ICMP).

Same codec contract as `trelay.stun.attributes`: `encode_value` / `decode_value`, reserved bits
dropped on decode and sent as zero, `StunDecodeError` (400) on anything malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from trelay.stun.attributes import (
    Attribute,
    check_error_code,
    decode_error_code,
    decode_text,
    expect_length,
)
from trelay.stun.codes import AddressFamily, AttributeType
from trelay.stun.errors import StunDecodeError

# --- error codes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCodeAttribute(Attribute):
    """ERROR-CODE (RFC 8489 §14.8): a code 300-699 and a UTF-8 reason phrase."""

    TYPE: ClassVar[int] = AttributeType.ERROR_CODE
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        check_error_code(self.code)

    def encode_value(self, transaction_id: bytes) -> bytes:
        head = bytes((0, 0, self.code // 100, self.code % 100))
        return head + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError("ErrorCode: shorter than 4 bytes")
        code = decode_error_code("ErrorCode", value[2], value[3])
        return cls(code, decode_text("ErrorCode", value[4:], 763))


@dataclass(frozen=True, slots=True)
class AddressErrorCode(Attribute):
    """ADDRESS-ERROR-CODE (RFC 8656 §14.12): family, code and reason for one family."""

    TYPE: ClassVar[int] = AttributeType.ADDRESS_ERROR_CODE
    family: AddressFamily
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        check_error_code(self.code)

    def encode_value(self, transaction_id: bytes) -> bytes:
        head = bytes((self.family, 0, self.code // 100, self.code % 100))
        return head + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError("AddressErrorCode: shorter than 4 bytes")
        try:
            family = AddressFamily(value[0])
        except ValueError as exc:
            raise StunDecodeError(f"AddressErrorCode: unknown family {value[0]}") from exc
        code = decode_error_code("AddressErrorCode", value[2], value[3])
        return cls(family, code, decode_text("AddressErrorCode", value[4:], 763))


@dataclass(frozen=True, slots=True)
class Icmp(Attribute):
    """ICMP (RFC 8656 §18.13): type and code of an ICMP error seen by the relay.

    Layout as the RFC draws it: 16 reserved bits, a 7-bit ICMP Type, a 9-bit ICMP Code,
    then 32 bits of Error Data (the next-hop MTU for "packet too big", else 0).
    """

    TYPE: ClassVar[int] = AttributeType.ICMP
    icmp_type: int
    icmp_code: int
    error_data: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.icmp_type < 1 << 7 and 0 <= self.icmp_code < 1 << 9):
            raise ValueError("ICMP type must fit 7 bits and code 9 bits")
        if not 0 <= self.error_data < 1 << 32:
            raise ValueError("ICMP error data must fit 32 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HHI", 0, self.icmp_type << 9 | self.icmp_code, self.error_data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("Icmp", value, 8)
        _, type_and_code, error_data = struct.unpack("!HHI", value)
        return cls(type_and_code >> 9, type_and_code & 0x1FF, error_data)


@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    """UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): the types that caused a 420."""

    TYPE: ClassVar[int] = AttributeType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(t.to_bytes(2, "big") for t in self.types)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise StunDecodeError("UnknownAttributes: odd length")
        return cls(tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)))
