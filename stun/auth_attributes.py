"""STUN attributes of RFC 8489's password algorithms (§14.11, §14.12) and RFC 7635's
ACCESS-TOKEN (§6.2): what the long-term and third-party mechanisms carry beyond text.

Same codec contract as `trelay.stun.attributes`.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from trelay.stun.attributes import (
    Attribute,
)
from trelay.stun.codes import AttributeType
from trelay.stun.errors import StunDecodeError

# --- password algorithms (RFC 8489 §14.11, §14.12) ---------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordAlgorithm(Attribute):
    """PASSWORD-ALGORITHM: the algorithm the client chose, with its parameters."""

    TYPE: ClassVar[int] = AttributeType.PASSWORD_ALGORITHM
    algorithm: int
    parameters: bytes = b""

    def encode_value(self, transaction_id: bytes) -> bytes:
        return encode_algorithm(self.algorithm, self.parameters)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        entries = decode_algorithms("PasswordAlgorithm", value)
        if len(entries) != 1:
            raise StunDecodeError("PasswordAlgorithm: expected exactly one algorithm")
        return cls(*entries[0])


@dataclass(frozen=True, slots=True)
class PasswordAlgorithms(Attribute):
    """PASSWORD-ALGORITHMS: the algorithms the server offers, in preference order."""

    TYPE: ClassVar[int] = AttributeType.PASSWORD_ALGORITHMS
    algorithms: tuple[tuple[int, bytes], ...]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _encode_algorithms(self.algorithms)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(decode_algorithms("PasswordAlgorithms", value))


@functools.lru_cache(maxsize=16)
def _encode_algorithms(algorithms: tuple[tuple[int, bytes], ...]) -> bytes:
    """The value of PASSWORD-ALGORITHMS; a server sends the same list in every 401 and
    438, so its few encodings are kept (issue 13 part 4)."""
    return b"".join(encode_algorithm(a, p) for a, p in algorithms)


def encode_algorithm(algorithm: int, parameters: bytes) -> bytes:
    """Algorithm (16), parameter length (16), parameters padded to 4 bytes."""
    pad = -len(parameters) % 4
    return struct.pack("!HH", algorithm, len(parameters)) + parameters + bytes(pad)


def decode_algorithms(name: str, value: bytes) -> tuple[tuple[int, bytes], ...]:
    entries: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 4:
            raise StunDecodeError(f"{name}: truncated algorithm entry")
        algorithm, length = struct.unpack_from("!HH", value, offset)
        end = offset + 4 + length
        if end > len(value):
            raise StunDecodeError(f"{name}: parameters overrun the attribute")
        entries.append((algorithm, bytes(value[offset + 4 : end])))
        offset = end + (-length % 4)
    if offset != len(value):
        raise StunDecodeError(f"{name}: parameter padding overruns the attribute")
    return tuple(entries)


# --- RFC 7635 ACCESS-TOKEN -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken(Attribute):
    """ACCESS-TOKEN (RFC 7635 §6.2): nonce and the AEAD-encrypted block, opaque here."""

    TYPE: ClassVar[int] = AttributeType.ACCESS_TOKEN
    nonce: bytes
    encrypted_block: bytes

    def __post_init__(self) -> None:
        if len(self.nonce) > 0xFFFF:
            raise ValueError("AccessToken: nonce longer than its 16-bit length field")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return len(self.nonce).to_bytes(2, "big") + self.nonce + self.encrypted_block

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 2:
            raise StunDecodeError("AccessToken: shorter than 2 bytes")
        nonce_length = int.from_bytes(value[:2], "big")
        if 2 + nonce_length > len(value):
            raise StunDecodeError("AccessToken: nonce overruns the attribute")
        return cls(bytes(value[2 : 2 + nonce_length]), bytes(value[2 + nonce_length :]))
