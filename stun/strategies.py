"""Hypothesis strategies for STUN: transaction ids, addresses, attributes, messages, bytes.

A public module for fuzzing STUN/TURN code, ours or yours. It needs the optional
`hypothesis` dependency (`pip install 'trelay[hypothesis]'`) and is the one `stun` module
that imports it; nothing else in `stun` imports this module.

    from hypothesis import given
    from trelay.stun import decode_message, encode_message
    from trelay.stun.codes import Method
    from trelay.stun import strategies as stun_st

    @given(stun_st.messages(methods=[Method.ALLOCATE]))
    def test_round_trip(message):
        assert decode_message(encode_message(message)) == message

Invariants of what is generated:

- every attribute strategy yields values within the RFC limits the decoder enforces (text
  byte bounds, fixed lengths, 16-bit lengths), so `decode(encode(a)) == a`;
- `messages()` yields messages that encode (body at most 65535 bytes) and decode back to
  an equal `Message`: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT appear at
  most once each, only at the end and in that order (RFC 8489 §14.5-14.7), with arbitrary
  (unverified) values; `signed_messages()` computes real ones with `trelay.stun.integrity`;
- `almost_valid_messages()` yields a valid encoding with one targeted corruption; it may
  or may not still decode (a flipped transaction id bit is harmless), which is the point:
  a decoder must either return a `Message` or raise `StunDecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar, cast

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "trelay.stun.strategies needs hypothesis; install it with: pip install 'trelay[hypothesis]'"
    ) from exc

from trelay.stun import address_attributes as addr
from trelay.stun import attributes as attrs
from trelay.stun import auth_attributes as auth_attrs
from trelay.stun import error_attributes as error_attrs
from trelay.stun.attributes import Attribute, UnknownAttribute
from trelay.stun.codes import (
    HEADER_LENGTH,
    MAGIC_COOKIE,
    TRANSACTION_ID_LENGTH,
    AddressFamily,
    ErrorCode,
    MessageClass,
    Method,
    PasswordAlgorithmId,
)
from trelay.stun.message import (
    ATTRIBUTE_CLASS_BY_TYPE,
    ATTRIBUTE_CLASSES,
    Message,
    encode_attribute,
    encode_message,
)

__all__ = [
    "ATTRIBUTE_STRATEGIES",
    "SignedMessage",
    "addresses",
    "almost_valid_messages",
    "attributes",
    "attributes_of",
    "encoded_messages",
    "messages",
    "signed_messages",
    "transaction_ids",
    "unknown_attributes",
]

A = TypeVar("A", bound=Attribute)

# The attributes whose position RFC 8489 §14.5-14.7 fixes; `messages()` appends them last.
_TRAILER_CLASSES: tuple[type[Attribute], ...] = (
    attrs.MessageIntegrity,
    attrs.MessageIntegritySha256,
    attrs.Fingerprint,
)
# The 16-bit length field, less room for what `encode_signed` appends (MESSAGE-INTEGRITY
# 24, -SHA256 up to 36, FINGERPRINT 8 bytes), so that every message can also be signed.
_MAX_BODY = 0xFFFF - 68


def transaction_ids() -> SearchStrategy[bytes]:
    """96-bit transaction ids (RFC 8489 §5), e.g. `b"\\x00" * 12`."""
    return st.binary(min_size=TRANSACTION_ID_LENGTH, max_size=TRANSACTION_ID_LENGTH)


def addresses(family: AddressFamily | None = None) -> SearchStrategy[tuple[str, int]]:
    """(host, port) pairs in canonical text form, e.g. `("192.0.2.1", 3478)`, `("::1", 0)`.

    `family` restricts them to IPv4 or IPv6; by default both appear.
    """
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).map(str)
    if family is AddressFamily.IPV4:
        hosts = v4
    elif family is AddressFamily.IPV6:
        hosts = v6
    else:
        hosts = v4 | v6
    return st.tuples(hosts, st.integers(0, 0xFFFF))


def _utf8(max_bytes: int) -> SearchStrategy[str]:
    """Text of at most `max_bytes` UTF-8 bytes; long draws are cut at a character boundary."""

    def cut(text: str) -> str:
        return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")

    return st.text(max_size=max_bytes).map(cut)


def _u(bits: int) -> SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def _address(cls: Callable[[str, int], Attribute]) -> SearchStrategy[Attribute]:
    return addresses().map(lambda pair: cls(*pair))


def _text(cls: Callable[[str], Attribute], max_bytes: int) -> SearchStrategy[Attribute]:
    return st.builds(cls, _utf8(max_bytes))


def _opaque(cls: Callable[[bytes], Attribute], *lengths: int) -> SearchStrategy[Attribute]:
    """Bytes of one of `lengths`, or of 0..lengths[0] bytes when only a bound is given."""
    if len(lengths) == 1:
        return st.builds(cls, st.binary(max_size=lengths[0]))
    return st.builds(
        cls, st.sampled_from(lengths).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    )


def _unsigned(cls: Callable[[int], Attribute], bits: int) -> SearchStrategy[Attribute]:
    return st.builds(cls, _u(bits))


_error_codes = st.sampled_from(ErrorCode).map(int) | st.integers(300, 699)
_families = st.sampled_from(AddressFamily)
_algorithms = st.sampled_from(PasswordAlgorithmId).map(int) | _u(16)
_algorithm_entries = st.tuples(_algorithms, st.binary(max_size=16))

# One entry per class in trelay.stun.message.ATTRIBUTE_CLASSES (a test checks the two agree).
# Limits: RFC 8489 §14 text bounds as the decoder enforces them; sizes of opaque values
# are kept small enough that a message of ten attributes stays far below 65535 bytes.
_TABLE: dict[type[Attribute], SearchStrategy[Attribute]] = {
    **{cls: _address(cls) for cls in addr.ADDRESS_ATTRIBUTES},
    attrs.Username: _text(attrs.Username, attrs.Username.MAX_BYTES),
    attrs.Realm: _text(attrs.Realm, attrs.Realm.MAX_BYTES),
    attrs.Nonce: _text(attrs.Nonce, attrs.Nonce.MAX_BYTES),
    attrs.Software: _text(attrs.Software, attrs.Software.MAX_BYTES),
    attrs.AlternateDomain: _text(attrs.AlternateDomain, attrs.AlternateDomain.MAX_BYTES),
    attrs.ThirdPartyAuthorization: _text(
        attrs.ThirdPartyAuthorization, attrs.ThirdPartyAuthorization.MAX_BYTES
    ),
    attrs.Data: _opaque(attrs.Data, 2048),
    attrs.Padding: _opaque(attrs.Padding, 512),
    attrs.ReservationToken: _opaque(attrs.ReservationToken, 8, 8),
    attrs.MobilityTicket: _opaque(attrs.MobilityTicket, 64),
    attrs.UserHash: _opaque(attrs.UserHash, 32, 32),
    attrs.MessageIntegrity: _opaque(attrs.MessageIntegrity, 20, 20),
    attrs.MessageIntegritySha256: _opaque(attrs.MessageIntegritySha256, 16, 20, 24, 28, 32),
    attrs.DontFragment: st.just(attrs.DontFragment()),
    attrs.UseCandidate: st.just(attrs.UseCandidate()),
    attrs.Lifetime: _unsigned(attrs.Lifetime, 32),
    attrs.ConnectionId: _unsigned(attrs.ConnectionId, 32),
    attrs.Priority: _unsigned(attrs.Priority, 32),
    attrs.IceControlled: _unsigned(attrs.IceControlled, 64),
    attrs.IceControlling: _unsigned(attrs.IceControlling, 64),
    attrs.Fingerprint: _unsigned(attrs.Fingerprint, 32),
    attrs.ChannelNumber: st.builds(attrs.ChannelNumber, st.integers(0x4000, 0x4FFF) | _u(16)),
    attrs.ResponsePort: _unsigned(attrs.ResponsePort, 16),
    attrs.RequestedTransport: _unsigned(attrs.RequestedTransport, 8),
    attrs.RequestedAddressFamily: st.builds(attrs.RequestedAddressFamily, _families),
    attrs.AdditionalAddressFamily: st.builds(attrs.AdditionalAddressFamily, _families),
    attrs.AdditionalAddressFamilyDraft: st.builds(attrs.AdditionalAddressFamilyDraft, _families),
    attrs.EvenPort: st.builds(attrs.EvenPort, st.booleans()),
    attrs.ChangeRequest: st.builds(attrs.ChangeRequest, st.booleans(), st.booleans()),
    error_attrs.ErrorCodeAttribute: st.builds(
        error_attrs.ErrorCodeAttribute, _error_codes, _utf8(763)
    ),
    error_attrs.AddressErrorCode: st.builds(
        error_attrs.AddressErrorCode, _families, _error_codes, _utf8(763)
    ),
    error_attrs.Icmp: st.builds(error_attrs.Icmp, _u(7), _u(8), _u(32)),
    error_attrs.UnknownAttributes: st.builds(
        error_attrs.UnknownAttributes, st.lists(_u(16), max_size=8).map(tuple)
    ),
    auth_attrs.PasswordAlgorithm: st.builds(
        auth_attrs.PasswordAlgorithm, _algorithms, st.binary(max_size=16)
    ),
    auth_attrs.PasswordAlgorithms: st.builds(
        auth_attrs.PasswordAlgorithms, st.lists(_algorithm_entries, max_size=4).map(tuple)
    ),
    auth_attrs.AccessToken: st.builds(
        auth_attrs.AccessToken, st.binary(max_size=64), st.binary(max_size=256)
    ),
}

ATTRIBUTE_STRATEGIES: Mapping[type[Attribute], SearchStrategy[Attribute]] = MappingProxyType(
    {cls: _TABLE[cls] for cls in ATTRIBUTE_CLASSES if cls in _TABLE}
)
"""The strategy for each attribute class of `trelay.stun.message.ATTRIBUTE_CLASSES`."""


def attributes_of(kind: type[A]) -> SearchStrategy[A]:
    """Valid attributes of one class, e.g. `attributes_of(XorPeerAddress)`."""
    return cast(SearchStrategy[A], ATTRIBUTE_STRATEGIES[kind])


def unknown_attributes(
    comprehension_required: bool | None = None,
) -> SearchStrategy[UnknownAttribute]:
    """`UnknownAttribute`s whose type this codec does not know (so they decode as unknown).

    `comprehension_required=True` gives types below 0x8000 (a server answers 420 for them),
    `False` types from 0x8000, `None` both.
    """
    required = st.integers(0x0000, 0x7FFF)
    optional = st.integers(0x8000, 0xFFFF)
    if comprehension_required is None:
        types = required | optional
    else:
        types = required if comprehension_required else optional
    unknown = types.filter(lambda t: t not in ATTRIBUTE_CLASS_BY_TYPE)
    return st.builds(UnknownAttribute, unknown, st.binary(max_size=64))


def attributes() -> SearchStrategy[Attribute]:
    """Any attribute: every known class (integrity and fingerprint included) or unknown."""
    return _any_attribute


_any_attribute: SearchStrategy[Attribute] = st.one_of(
    *ATTRIBUTE_STRATEGIES.values(), unknown_attributes()
)


def _choices(
    given: SearchStrategy[int] | Iterable[int] | None, default: SearchStrategy[int]
) -> SearchStrategy[int]:
    if given is None:
        return default
    if isinstance(given, SearchStrategy):
        return given
    return st.sampled_from(tuple(given))


@st.composite
def _messages(
    draw: st.DrawFn,
    methods: SearchStrategy[int],
    classes: SearchStrategy[int],
    elements: SearchStrategy[Attribute],
    *,
    max_attributes: int,
    trailer: bool,
) -> Message:
    transaction_id = draw(transaction_ids())
    drawn = draw(st.lists(elements, max_size=max_attributes))
    body = [a for a in drawn if type(a) not in _TRAILER_CLASSES]
    if trailer:
        # Any subsequence of (MI, MI-SHA256, FP), in that order: RFC 8489 §14.5-14.7.
        body += [draw(ATTRIBUTE_STRATEGIES[c]) for c in _TRAILER_CLASSES if draw(st.booleans())]
    # Keep the body within `_MAX_BODY` by dropping attributes from the front (the trailer
    # stays last); with the default attribute strategies this never triggers.
    sizes = [len(encode_attribute(a, transaction_id)) for a in body]
    while sum(sizes) > _MAX_BODY:
        del body[0], sizes[0]
    return Message(draw(methods), MessageClass(draw(classes)), transaction_id, tuple(body))


def messages(
    methods: SearchStrategy[int] | Iterable[int] | None = None,
    classes: SearchStrategy[int] | Iterable[int] | None = None,
    attributes: SearchStrategy[Attribute] | None = None,
    *,
    max_attributes: int = 10,
    trailer: bool = True,
) -> SearchStrategy[Message]:
    """Valid `Message`s that encode and decode back to themselves.

    `methods` and `classes` are strategies or collections of values (default: every
    `Method` and any 12-bit number; every `MessageClass`); `attributes` is a strategy for
    one attribute (default `attributes()`), of which up to `max_attributes` are drawn.
    Integrity and fingerprint attributes drawn among them are dropped from the body; with
    `trailer` a random subsequence of MESSAGE-INTEGRITY, -SHA256, FINGERPRINT (values not
    computed) ends the message.

        messages(methods=[Method.BINDING], classes=[MessageClass.REQUEST])
        messages(attributes=attributes_of(Data) | attributes_of(XorPeerAddress))
    """
    return _messages(
        _choices(methods, st.sampled_from(Method) | _u(12)),
        _choices(classes, st.sampled_from(MessageClass)),
        _any_attribute if attributes is None else attributes,
        max_attributes=max_attributes,
        trailer=trailer,
    )


def encoded_messages(source: SearchStrategy[Message] | None = None) -> SearchStrategy[bytes]:
    """Valid encodings of `messages()` (or of the messages `source` yields)."""
    return (messages() if source is None else source).map(encode_message)


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A message, the key it was signed with (None: fingerprint only) and its encoding."""

    message: Message
    key: bytes | None
    data: bytes


@st.composite
def signed_messages(
    draw: st.DrawFn, source: SearchStrategy[Message] | None = None
) -> SignedMessage:
    """Messages signed by `trelay.stun.integrity.encode_signed` with a random key and options.

    The key is None (FINGERPRINT only) or 1-64 random bytes; SHA-1 and/or SHA-256
    integrity (with a truncation length of 16-32) and FINGERPRINT are chosen at random.
    `source` must yield messages without integrity attributes (default: `messages()`
    with `trailer=False`).
    """
    from trelay.stun.integrity import encode_signed  # noqa: PLC0415 - written after this module

    message = draw(messages(trailer=False) if source is None else source)
    key = draw(st.none() | st.binary(min_size=1, max_size=64))
    sha1, sha256 = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    data = encode_signed(
        message,
        key,
        sha1=sha1,
        sha256=sha256,
        sha256_length=draw(st.sampled_from((16, 20, 24, 28, 32))),
        fingerprint=draw(st.booleans()),
    )
    return SignedMessage(message, key, data)


# --- almost valid encodings -----------------------------------------------------------------


def _u16(data: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "big")


def _set_u16(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 2] = value.to_bytes(2, "big")


def _tlv_offsets(data: bytes) -> list[int]:
    """Offsets of the attribute TLVs of a valid encoding."""
    offsets, offset = [], HEADER_LENGTH
    while offset < len(data):
        offsets.append(offset)
        length = _u16(data, offset + 2)
        offset += 4 + length + (-length % 4)
    return offsets


@st.composite
def almost_valid_messages(draw: st.DrawFn, source: SearchStrategy[bytes] | None = None) -> bytes:
    """A valid encoding with one targeted corruption, the interesting inputs of a decoder.

    The corruptions: a flipped header bit; a lying length field; a truncated attribute
    (header length fixed up, so the attribute parser sees it); an attribute length that
    moves the padding; a wrong magic cookie; an attribute overrunning the message; extra
    bytes (with the header length left or fixed up, so they parse as a junk attribute).
    """
    data = bytearray(draw(encoded_messages() if source is None else source))
    offsets = _tlv_offsets(bytes(data))
    with_value = [at for at in offsets if _u16(data, at + 2)]
    # Attribute-level corruptions first: they reach deepest into a decoder, and hypothesis
    # favours (and shrinks towards) the first choices.
    kinds = ["truncated_attribute"] if with_value else []
    if offsets:
        kinds += ["bad_padding_length", "attribute_overrun"]
    kinds += ["extra_bytes", "lying_length", "wrong_cookie", "flip_header_bit"]
    kind = draw(st.sampled_from(kinds))
    if kind == "flip_header_bit":
        bit = draw(st.integers(0, 8 * HEADER_LENGTH - 1))
        data[bit // 8] ^= 0x80 >> (bit % 8)
    elif kind == "lying_length":
        actual = len(data) - HEADER_LENGTH
        _set_u16(data, 2, draw(_u(16).filter(lambda n: n != actual)))
    elif kind == "wrong_cookie":
        data[4:8] = draw(_u(32).filter(lambda c: c != MAGIC_COOKIE)).to_bytes(4, "big")
    elif kind == "extra_bytes":
        data += draw(st.binary(min_size=1, max_size=32))
        if draw(st.booleans()):
            data += bytes(-len(data) % 4)
            _set_u16(data, 2, len(data) - HEADER_LENGTH)
    elif kind == "truncated_attribute":
        # Keep the TLV header, cut the value to fewer (4-aligned) bytes than it declares
        # and fix the header length, so that only the attribute parser can notice.
        at = draw(st.sampled_from(with_value))
        kept = draw(st.integers(0, (_u16(data, at + 2) - 1) // 4)) * 4
        del data[at + 4 + kept :]
        _set_u16(data, 2, len(data) - HEADER_LENGTH)
    else:
        at = draw(st.sampled_from(offsets))
        length = _u16(data, at + 2)
        if kind == "bad_padding_length":
            # Another length in the same or a neighbouring 4-byte block.
            padded = length + (-length % 4)
            wrong = draw(st.integers(max(0, padded - 7), padded + 4).filter(lambda n: n != length))
            _set_u16(data, at + 2, wrong)
        else:  # attribute_overrun: the value runs past the end of the message
            room = len(data) - at - 4
            _set_u16(data, at + 2, draw(st.integers(room + 1, 0xFFFF)))
    return bytes(data)
