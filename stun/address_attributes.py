"""Address attributes, plain and XOR'ed, for IPv4 and IPv6.

Owns the one layout all STUN address attributes share (RFC 8489 §14.1, §14.2): a reserved
byte, the family, the port and the address. The XOR forms (XOR-MAPPED-ADDRESS,
XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS) XOR the port with the top 16 bits of the magic
cookie and the address with the cookie (IPv4) or with the cookie followed by the
transaction id (IPv6).

Addresses are held as the canonical text form that `socket` APIs use ("192.0.2.1",
"2001:db8::1") and a port, so a runtime can compare them with a socket address as is.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from trelay.stun.attributes import Attribute
from trelay.stun.codes import MAGIC_COOKIE, MAGIC_COOKIE_BYTES, AddressFamily, AttributeType
from trelay.stun.errors import StunDecodeError

_FAMILY_PORT = struct.Struct("!xBH")
_IPV4 = struct.Struct("!I")
_PORT_MASK = MAGIC_COOKIE >> 16
# A dotted quad as `socket` writes it: each part 0-255 in ASCII decimal, no leading zero.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _xor(data: bytes, mask: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")


@functools.lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """The canonical text of an IP address ("::FFFF:1.2.3.4" -> "::ffff:1.2.3.4").

    Cached because every address attribute, decoded ones included, is checked with it and
    a relay sees the same client and peer addresses again and again; parsing with
    `ipaddress` was half the cost of decoding an XOR-PEER-ADDRESS. A dotted quad that is
    canonical already (four decimal numbers 0-255, no leading zeros) is returned as it is
    without `ipaddress`, by one regex match (a check per part in Python cost 2 µs):
    each new client's first answer meets one (issue 13 part 4).
    """
    if _CANONICAL_IPV4.fullmatch(host):
        return host
    return str(ipaddress.ip_address(host))


@functools.lru_cache(maxsize=1024)
def _ipv6_packed(host: str) -> bytes:
    return ipaddress.IPv6Address(host).packed


def _host_text(packed: bytes) -> str:
    if len(packed) == 4:
        return ".".join(map(str, packed))  # already canonical: no leading zeros
    return str(ipaddress.IPv6Address(packed))


@dataclass(frozen=True, slots=True)
class _Address(Attribute):
    host: str
    port: int
    XOR: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        # Normalise so that equal addresses compare equal ("::FFFF:1.2.3.4" vs compressed).
        canonical = canonical_host(self.host)
        if canonical != self.host:
            object.__setattr__(self, "host", canonical)

    @property
    def family(self) -> AddressFamily:
        return AddressFamily.IPV6 if ":" in self.host else AddressFamily.IPV4

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) pair as socket APIs take it."""
        return (self.host, self.port)

    def encode_value(self, transaction_id: bytes) -> bytes:
        host, port = self.host, self.port
        if ":" not in host:
            # IPv4 as an int from the canonical dotted quad: no `ipaddress` object on the
            # way of every Allocate and Binding answer (issue 13 part 4).
            a, b, c, d = host.split(".")
            number = int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)
            if self.XOR:
                port ^= _PORT_MASK
                number ^= MAGIC_COOKIE
            return _FAMILY_PORT.pack(AddressFamily.IPV4, port) + _IPV4.pack(number)
        packed = _ipv6_packed(host)
        if self.XOR:
            port ^= _PORT_MASK
            packed = _xor(packed, MAGIC_COOKIE_BYTES + transaction_id[:12])
        return _FAMILY_PORT.pack(AddressFamily.IPV6, port) + packed

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) not in (8, 20):
            raise StunDecodeError(f"{cls.__name__}: length {len(value)}, expected 8 or 20")
        family, port = _FAMILY_PORT.unpack_from(value)
        packed = bytes(value[4:])
        if (family, len(packed)) not in ((AddressFamily.IPV4, 4), (AddressFamily.IPV6, 16)):
            raise StunDecodeError(f"{cls.__name__}: family {family} with {len(packed)} bytes")
        if cls.XOR:
            port ^= _PORT_MASK
            packed = _xor(packed, MAGIC_COOKIE_BYTES + transaction_id[: len(packed) - 4])
        return cls(_host_text(packed), port)


@dataclass(frozen=True, slots=True)
class MappedAddress(_Address):
    """MAPPED-ADDRESS (RFC 8489 §14.1), kept for RFC 3489 clients."""

    TYPE: ClassVar[int] = AttributeType.MAPPED_ADDRESS


@dataclass(frozen=True, slots=True)
class AlternateServer(_Address):
    """ALTERNATE-SERVER (RFC 8489 §14.15)."""

    TYPE: ClassVar[int] = AttributeType.ALTERNATE_SERVER


@dataclass(frozen=True, slots=True)
class ResponseOrigin(_Address):
    """RESPONSE-ORIGIN (RFC 5780 §7.3)."""

    TYPE: ClassVar[int] = AttributeType.RESPONSE_ORIGIN


@dataclass(frozen=True, slots=True)
class OtherAddress(_Address):
    """OTHER-ADDRESS (RFC 5780 §7.4)."""

    TYPE: ClassVar[int] = AttributeType.OTHER_ADDRESS


@dataclass(frozen=True, slots=True)
class XorMappedAddress(_Address):
    """XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the client's reflexive address."""

    TYPE: ClassVar[int] = AttributeType.XOR_MAPPED_ADDRESS
    XOR: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class XorPeerAddress(_Address):
    """XOR-PEER-ADDRESS (RFC 8656 §14.3)."""

    TYPE: ClassVar[int] = AttributeType.XOR_PEER_ADDRESS
    XOR: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class XorRelayedAddress(_Address):
    """XOR-RELAYED-ADDRESS (RFC 8656 §14.5)."""

    TYPE: ClassVar[int] = AttributeType.XOR_RELAYED_ADDRESS
    XOR: ClassVar[bool] = True


# Every address attribute class, in one place: the decoder's table
# (`trelay.stun.message.ATTRIBUTE_CLASSES`), the strategies and the node fuzzer use it.
ADDRESS_ATTRIBUTES: tuple[type[_Address], ...] = (
    MappedAddress,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    AlternateServer,
    ResponseOrigin,
    OtherAddress,
)
