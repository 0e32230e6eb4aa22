"""STUN messages: the header, the attribute TLVs, and bytes <-> `Message`.

Owns the message layout of RFC 8489 §5 and §14: the 20-byte header (two zero bits, the
method/class bit interleave, length, magic cookie, 96-bit transaction id) and the
attribute list (type, length, value, padding to 4 bytes).

Decoding is strict and total: any input either yields a `Message` or raises
`StunDecodeError` (400). Unknown attributes are kept as `UnknownAttribute`, in order;
`Message.unknown_comprehension_required()` lists the types a server must answer 420 for.
Per RFC 8489 §14.5-14.7 nothing but MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow
MESSAGE-INTEGRITY (other attributes there are ignored), and nothing may follow FINGERPRINT.

Integrity and fingerprint are computed over raw bytes, so they live in `trelay.stun.integrity`.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from trelay.stun import address_attributes as addr
from trelay.stun import attributes as attrs
from trelay.stun import auth_attributes as auth_attrs
from trelay.stun import error_attributes as error_attrs
from trelay.stun.attributes import Attribute, UnknownAttribute
from trelay.stun.channel_data import FIRST_CHANNEL_BYTE
from trelay.stun.codes import (
    HEADER_LENGTH,
    MAGIC_COOKIE,
    TRANSACTION_ID_LENGTH,
    AttributeType,
    MessageClass,
    Method,
    is_comprehension_required,
)
from trelay.stun.errors import StunDecodeError

A = TypeVar("A", bound=Attribute)

HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")
_PADDING = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")  # by the padding length
_METHODS: dict[int, Method] = {m.value: m for m in Method}
# By the two class bits: a tuple index, not an IntEnum call per message (issue 13 part 4).
_CLASSES: tuple[MessageClass, ...] = tuple(sorted(MessageClass))

ATTRIBUTE_CLASSES: tuple[type[Attribute], ...] = (
    *addr.ADDRESS_ATTRIBUTES,
    attrs.Username,
    attrs.Realm,
    attrs.Nonce,
    attrs.Software,
    attrs.AlternateDomain,
    attrs.ThirdPartyAuthorization,
    attrs.Data,
    attrs.Padding,
    attrs.ReservationToken,
    attrs.MobilityTicket,
    attrs.UserHash,
    attrs.MessageIntegrity,
    attrs.MessageIntegritySha256,
    attrs.DontFragment,
    attrs.UseCandidate,
    attrs.Lifetime,
    attrs.ConnectionId,
    attrs.Priority,
    attrs.IceControlled,
    attrs.IceControlling,
    attrs.Fingerprint,
    attrs.ChannelNumber,
    attrs.ResponsePort,
    attrs.RequestedTransport,
    attrs.RequestedAddressFamily,
    attrs.AdditionalAddressFamily,
    attrs.AdditionalAddressFamilyDraft,
    attrs.EvenPort,
    attrs.ChangeRequest,
    error_attrs.ErrorCodeAttribute,
    error_attrs.AddressErrorCode,
    error_attrs.Icmp,
    error_attrs.UnknownAttributes,
    auth_attrs.PasswordAlgorithm,
    auth_attrs.PasswordAlgorithms,
    auth_attrs.AccessToken,
)
ATTRIBUTE_CLASS_BY_TYPE: dict[int, type[Attribute]] = {c.TYPE: c for c in ATTRIBUTE_CLASSES}

# Plain ints: the decoder compares every attribute type with them.
_MI = int(AttributeType.MESSAGE_INTEGRITY)
_MI256 = int(AttributeType.MESSAGE_INTEGRITY_SHA256)
_FP = int(AttributeType.FINGERPRINT)


def new_transaction_id() -> bytes:
    """96 random bits (RFC 8489 §5: uniformly and randomly chosen)."""
    return secrets.token_bytes(TRANSACTION_ID_LENGTH)


def encode_message_type(method: int, message_class: int) -> int:
    """Interleave the 12 method bits M11..M0 with the class bits C1 C0 (RFC 8489 §5)."""
    return (
        (method & 0x000F)
        | (method & 0x0070) << 1
        | (method & 0x0F80) << 2
        | (message_class & 0b01) << 4
        | (message_class & 0b10) << 7
    )


def decode_message_type(message_type: int) -> tuple[int, MessageClass]:
    """The inverse of `encode_message_type`; the caller has checked the top two bits."""
    method = (message_type & 0x000F) | (message_type & 0x00E0) >> 1 | (message_type & 0x3E00) >> 2
    return method, _CLASSES[(message_type >> 4) & 0b01 | (message_type >> 7) & 0b10]


@dataclass(frozen=True, slots=True)
class Message:
    """One STUN message. `method` is a `Method` when known, else the raw 12-bit number."""

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    # The first attribute of each class, built at the first `get` (issue 13 part 4: an
    # Allocate's way through the core asks for attributes some 50 times; a scan each).
    _first: dict[type[Attribute], Attribute] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if len(self.transaction_id) != TRANSACTION_ID_LENGTH:
            raise ValueError("transaction id must be 12 bytes")
        if not 0 <= self.method <= 0xFFF:
            raise ValueError(f"method {self.method} does not fit 12 bits")

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of this class, or None."""
        first = self._first
        if first is None:
            # Reversed, so that the first of repeated attributes is the one kept.
            first = {type(a): a for a in reversed(self.attributes)}
            object.__setattr__(self, "_first", first)
        return first.get(kind)  # type: ignore[return-value]

    def get_all(self, kind: type[A]) -> tuple[A, ...]:
        """Every attribute of this class, in message order (repeats are kept)."""
        return tuple(a for a in self.attributes if type(a) is kind)

    def unknown_comprehension_required(self) -> tuple[int, ...]:
        """Types a receiver must reject with 420 UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1)."""
        if self.get(UnknownAttribute) is None:
            return ()  # the usual case, from the `get` table: no scan of every attribute
        return tuple(
            a.type
            for a in self.attributes
            if isinstance(a, UnknownAttribute) and is_comprehension_required(a.type)
        )

    def with_attributes(self, *extra: Attribute) -> Message:
        return Message(
            self.method, self.message_class, self.transaction_id, self.attributes + extra
        )


def attribute_type(attribute: Attribute) -> int:
    return attribute.type if isinstance(attribute, UnknownAttribute) else attribute.TYPE


def encode_attribute(attribute: Attribute, transaction_id: bytes) -> bytes:
    """One TLV with its padding (RFC 8489 §14: padding bytes are sent as zero)."""
    value = attribute.encode_value(transaction_id)
    if len(value) > 0xFFFF:
        raise ValueError(f"{type(attribute).__name__}: value longer than 65535 bytes")
    return _TLV.pack(attribute_type(attribute), len(value)) + value + bytes(-len(value) % 4)


def encode_header(message_type: int, length: int, transaction_id: bytes) -> bytes:
    return HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id)


def encode_attributes(attributes: Iterable[Attribute], transaction_id: bytes) -> bytes:
    """`encode_attribute` of each, joined; inlined here because every response is encoded
    through it (issue 13 part 4: a call less per attribute, no empty padding objects)."""
    parts: list[bytes] = []
    append = parts.append
    for attribute in attributes:
        value = attribute.encode_value(transaction_id)
        length = len(value)
        if length > 0xFFFF:
            raise ValueError(f"{type(attribute).__name__}: value longer than 65535 bytes")
        append(_TLV.pack(attribute.TYPE, length))  # an UnknownAttribute's TYPE is its type
        append(value)
        if length % 4:
            append(_PADDING[-length % 4])
    return b"".join(parts)


def encode_message(message: Message) -> bytes:
    """Encode as is: integrity and fingerprint attributes, if any, are written verbatim.

    Use `trelay.stun.integrity.encode_signed` to compute them.
    """
    body = encode_attributes(message.attributes, message.transaction_id)
    if len(body) > 0xFFFF:
        raise ValueError("message body longer than 65535 bytes")
    message_type = encode_message_type(message.method, message.message_class)
    return encode_header(message_type, len(body), message.transaction_id) + body


def is_stun_header(data: bytes) -> bool:
    """Cheap test for demultiplexing: top bits 00, magic cookie, 4-aligned length."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < FIRST_CHANNEL_BYTE
        and data[4:8] == b"\x21\x12\xa4\x42"
        and data[3] % 4 == 0
    )


def decode_message(data: bytes, max_attributes: int | None = None) -> Message:
    """Parse one complete STUN message (RFC 8489 §6.3) or raise `StunDecodeError`.

    `max_attributes`: more attributes than this (ignored ones included) is an error,
    found before the excess is decoded, so the work of one message is bounded by it and
    not by its length (a 64 KiB message holds over 5,000 attributes; issue 15)."""
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError("shorter than the 20-byte STUN header")
    message_type, length, cookie, transaction_id = HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise StunDecodeError("the two most significant bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError("no magic cookie (an RFC 3489 message)")
    if length % 4 or HEADER_LENGTH + length != len(data):
        raise StunDecodeError(f"length field {length} does not match {len(data) - 20} bytes")
    method, message_class = decode_message_type(message_type)
    return Message(
        _METHODS.get(method, method),
        message_class,
        transaction_id,
        _decode_attributes(bytes(data), transaction_id, max_attributes),
    )


def _decode_attributes(
    data: bytes, transaction_id: bytes, max_attributes: int | None = None
) -> tuple[Attribute, ...]:
    # Offsets index the whole message so that each value is one slice of `data` (this
    # loop is the hot path of every relay request; see benchmarks/README.md).
    decoded: list[Attribute] = []
    offset = HEADER_LENGTH
    end = len(data)
    seen_integrity = seen_sha256 = seen_fingerprint = False
    # Counted before anything of the attribute is read: past the cap, nothing more is.
    budget = -1 if max_attributes is None else max_attributes
    while offset < end:
        if budget == 0:
            raise StunDecodeError(f"more than {max_attributes} attributes")
        budget -= 1
        if end - offset < 4:
            raise StunDecodeError("truncated attribute header")
        kind, length = _TLV.unpack_from(data, offset)
        value_start = offset + 4
        offset = value_start + length + (-length % 4)
        if offset > end:
            raise StunDecodeError(f"attribute 0x{kind:04x} overruns the message")
        if seen_fingerprint:
            raise StunDecodeError("an attribute follows FINGERPRINT")
        # RFC 8489 §14.5, §14.6: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
        # FINGERPRINT count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; ignore the rest.
        if (seen_sha256 and kind != _FP) or (seen_integrity and kind not in (_MI256, _FP)):
            continue
        if kind == _MI:
            seen_integrity = True
        elif kind == _MI256:
            seen_integrity = seen_sha256 = True
        elif kind == _FP:
            seen_fingerprint = True
        value = data[value_start : value_start + length]
        cls = ATTRIBUTE_CLASS_BY_TYPE.get(kind)
        if cls is None:
            decoded.append(UnknownAttribute(kind, value))
        else:
            decoded.append(cls.decode_value(value, transaction_id))
    return tuple(decoded)
