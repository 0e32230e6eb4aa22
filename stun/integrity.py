"""MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT over raw message bytes.

Owns the three attributes whose values are computed over the encoded message
(RFC 8489 §14.5, §14.6, §14.7): signing a `Message` (`encode_signed`, or the fields of
one without building it: `sign_attributes`) and checking received bytes
(`verify_integrity`, `verify_fingerprint`, `integrity_algorithms`; `fingerprint_matches`
for a message already decoded). Every HMAC here comes from `keyed_hmac`: a state keyed
once per key and copied per message (a bounded table of keys).

Invariants:

- Checks work on the bytes as received and never re-encode: padding bytes may be
  non-zero on the wire (the RFC 5769 vectors pad with spaces) and are covered by the
  HMAC and the CRC as they are.
- Each value is computed over the message up to (excluding) its own attribute, with the
  header's Length field adjusted to end just after that attribute (§14.5, §14.6) or
  after FINGERPRINT, which is always last (§14.7).
- Which integrity attribute counts follows RFC 8489 §9: attributes after
  MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT;
  attributes after MESSAGE-INTEGRITY-SHA256 are ignored except FINGERPRINT; the first
  occurrence of each counts.
- The verifiers are total: any bytes give True or False, never an exception, and MAC
  comparisons are constant-time (`hmac.compare_digest`).
- A key of None means "unsigned"; an empty key is a key (HMAC accepts it).
"""

from __future__ import annotations

import hmac
import struct
import zlib
from dataclasses import dataclass

from trelay.stun.attributes import Attribute
from trelay.stun.codes import FINGERPRINT_XOR, HEADER_LENGTH, MAGIC_COOKIE, AttributeType
from trelay.stun.message import HEADER, Message, encode_attributes, encode_message_type

_TLV = struct.Struct("!HH")
_LENGTH = struct.Struct("!H")
_MI = AttributeType.MESSAGE_INTEGRITY
_MI256 = AttributeType.MESSAGE_INTEGRITY_SHA256
_FP = AttributeType.FINGERPRINT
_COMPUTED = frozenset((_MI, _MI256, _FP))
_SHA1_LENGTH = 20
_FINGERPRINT_LENGTH = 4
_MAX_BODY = 0xFFFF
_MI_TLV = _TLV.pack(_MI, _SHA1_LENGTH)
_FP_TLV = _TLV.pack(_FP, _FINGERPRINT_LENGTH)


def valid_sha256_length(length: int) -> bool:
    """RFC 8489 §14.6: at least 16 bytes, at most 32, a multiple of 4."""
    return 16 <= length <= 32 and length % 4 == 0


@dataclass(frozen=True, slots=True)
class IntegrityAlgorithms:
    """Which integrity attributes a received message carries (those that count, §9).

    `sha256_length` is the length of the MESSAGE-INTEGRITY-SHA256 value, or None when
    the attribute is absent. A server answers with the attribute the request used
    (RFC 8489 §9.1.3: MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY).
    """

    sha1: bool = False
    sha256_length: int | None = None
    fingerprint: bool = False

    @property
    def sha256(self) -> bool:
        return self.sha256_length is not None

    @property
    def any_integrity(self) -> bool:
        return self.sha1 or self.sha256_length is not None


@dataclass(frozen=True, slots=True)
class _Layout:
    """Offsets (of the TLV header) of the attributes that count; -1 when absent."""

    integrity: int
    integrity_sha256: int
    last: int
    last_type: int


# The last `bytes` scanned and its layout: a signed request is checked for its
# FINGERPRINT and then for its MESSAGE-INTEGRITY, the same object twice (issue 13 part
# 4). Keyed by identity, which holds it alive, so no other object can take its place;
# bytes only, as they cannot change in between. One message held, at most 64 KiB.
_last_scan: list[tuple[bytes, _Layout | None]] = [(b"", None)]


def _scan(data: bytes) -> _Layout | None:
    """Walk the TLVs of a well-formed message; None if the framing is broken."""
    last, layout = _last_scan[0]
    if last is data:
        return layout
    layout = _walk(data)
    if type(data) is bytes:
        _last_scan[0] = (data, layout)
    return layout


def _walk(data: bytes) -> _Layout | None:
    end = len(data)
    if end < HEADER_LENGTH or data[0] & 0xC0 or (end - HEADER_LENGTH) % 4:
        return None
    if _LENGTH.unpack_from(data, 2)[0] != end - HEADER_LENGTH:
        return None
    integrity = integrity_sha256 = last = -1
    last_type = -1
    offset = HEADER_LENGTH
    while offset < end:
        # The body length is a multiple of 4 and so is every step, so 4 bytes remain here.
        kind, length = _TLV.unpack_from(data, offset)
        if offset + 4 + length > end:
            return None
        if kind == _MI256 and integrity_sha256 < 0:
            integrity_sha256 = offset
        elif kind == _MI and integrity < 0 and integrity_sha256 < 0:
            # A MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is ignored (§9).
            integrity = offset
        last, last_type = offset, kind
        offset += 4 + length + (-length % 4)
    return _Layout(integrity, integrity_sha256, last, last_type)


def _mac(key: bytes, data: bytes, end: int, value_length: int, digest: str) -> bytes:
    """HMAC over data[:end] with the Length field set to end just after the MI TLV."""
    adjusted = end + 4 + value_length - HEADER_LENGTH
    # Over a copy (a request is a few hundred bytes): one `update`, not three.
    return keyed_hmac(key, data[:2] + _LENGTH.pack(adjusted) + data[4:end], digest)


# HMAC states keyed and ready, by (key, digest name): a one-shot `hmac.digest` looks the
# digest up in OpenSSL on every call; a copy of a keyed state does not (1.1 against 1.6
# µs a MAC in-process). The keys are the long-term keys of the clients signing now (the
# same one for every request of an allocation), TURN REST secrets and nonce keys.
# Bounded, emptied when full: the long-term keys are up to the clients.
_MAX_KEYED = 1024
_keyed: dict[tuple[bytes, str], hmac.HMAC] = {}


def keyed_hmac(key: bytes, data: bytes, digest: str) -> bytes:
    """`hmac.digest(key, data, digest)`, from a copy of a keyed state kept for `key`."""
    state = _keyed.get((key, digest))
    if state is None:
        if len(_keyed) >= _MAX_KEYED:
            _keyed.clear()
        state = _keyed[(key, digest)] = hmac.new(key, digestmod=digest)
    mac = state.copy()
    mac.update(data)
    return mac.digest()


def integrity_algorithms(data: bytes) -> IntegrityAlgorithms:
    """The integrity attributes `data` carries; all absent if the framing is broken."""
    layout = _scan(data)
    if layout is None:
        return IntegrityAlgorithms()
    sha256_length = None
    if layout.integrity_sha256 >= 0:
        sha256_length = _LENGTH.unpack_from(data, layout.integrity_sha256 + 2)[0]
    return IntegrityAlgorithms(
        sha1=layout.integrity >= 0,
        sha256_length=sha256_length,
        fingerprint=layout.last_type == _FP,
    )


def verify_integrity(data: bytes, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (RFC 8489 §9.1.3).

    False when neither is present, on a mismatch, or when `data` is not a well-framed
    STUN message. A truncated SHA-256 value is compared on its own length.
    """
    layout = _scan(data)
    if layout is None:
        return False
    if layout.integrity_sha256 >= 0:
        start = layout.integrity_sha256
        length = _LENGTH.unpack_from(data, start + 2)[0]
        if not valid_sha256_length(length):
            return False
        expected = _mac(key, data, start, length, "sha256")[:length]
    elif layout.integrity >= 0:
        start = layout.integrity
        length = _LENGTH.unpack_from(data, start + 2)[0]
        if length != _SHA1_LENGTH:
            return False
        expected = _mac(key, data, start, length, "sha1")
    else:
        return False
    return hmac.compare_digest(expected, data[start + 4 : start + 4 + length])


def verify_fingerprint(data: bytes) -> bool:
    """True only if the last attribute is FINGERPRINT and matches (RFC 8489 §14.7)."""
    layout = _scan(data)
    if layout is None or layout.last_type != _FP:
        return False
    start = layout.last
    if _LENGTH.unpack_from(data, start + 2)[0] != _FINGERPRINT_LENGTH:
        return False
    # FINGERPRINT is last, so the Length field already counts it, as §14.7 requires.
    expected = zlib.crc32(memoryview(data)[:start]) ^ FINGERPRINT_XOR
    return expected == int.from_bytes(data[start + 4 : start + 8], "big")


def fingerprint_matches(data: bytes, fingerprint: int) -> bool:
    """Whether the FINGERPRINT value of a message `decode_message` accepted matches.

    The decoder refuses anything after FINGERPRINT and checked the framing, so it is the
    last 8 bytes and the CRC covers the rest: no walk of the attributes, which an
    unsigned request (each client's first Allocate) would not need otherwise.
    """
    return zlib.crc32(memoryview(data)[:-8]) ^ FINGERPRINT_XOR == fingerprint


def encode_signed(
    message: Message,
    key: bytes | None = None,
    *,
    sha1: bool = True,
    sha256: bool = False,
    sha256_length: int = 32,
    fingerprint: bool = True,
) -> bytes:
    """Encode `message` and append, in this order, the computed attributes.

    MESSAGE-INTEGRITY (if `key` is not None and `sha1`), MESSAGE-INTEGRITY-SHA256
    truncated to `sha256_length` (if `key` is not None and `sha256`), FINGERPRINT (if
    `fingerprint`). `message` must not already contain any of the three (ValueError).
    """
    return sign_attributes(
        message.method, message.message_class, message.transaction_id, message.attributes,
        key, sha1=sha1, sha256=sha256, sha256_length=sha256_length, fingerprint=fingerprint,
    )  # fmt: skip


def sign_attributes(
    method: int,
    message_class: int,
    transaction_id: bytes,
    attributes: tuple[Attribute, ...],
    key: bytes | None = None,
    *,
    sha1: bool = True,
    sha256: bool = False,
    sha256_length: int = 32,
    fingerprint: bool = True,
) -> bytes:
    """`encode_signed` of the message these fields make, without building the `Message`
    (every response the TURN core sends comes this way: issue 13 part 4)."""
    for attribute in attributes:
        # TYPE, not `attribute_type`: the same number (an UnknownAttribute's TYPE is its
        # type) without a call per attribute of every response (issue 13 part 4).
        if attribute.TYPE in _COMPUTED:
            raise ValueError(
                f"{type(attribute).__name__}: integrity and fingerprint are computed here"
            )
    if sha256 and not valid_sha256_length(sha256_length):
        raise ValueError(f"MESSAGE-INTEGRITY-SHA256 length {sha256_length}: 16..32, step 4")
    data = encode_attributes(attributes, transaction_id)
    if key is None:
        sha1 = sha256 = False
    # The header's Length grows with each computed attribute (each value covers a header
    # whose Length ends just after its own attribute); the bound is checked once.
    length = len(data)
    computed = sha1 * (4 + _SHA1_LENGTH) + sha256 * (4 + sha256_length)
    if length + computed + fingerprint * (4 + _FINGERPRINT_LENGTH) > _MAX_BODY:
        raise ValueError("message body longer than 65535 bytes")
    message_type = encode_message_type(method, message_class)
    if key is not None and sha1:
        # RFC 8489 §14.5: HMAC over the message so far, Length pointing past MI.
        length += 4 + _SHA1_LENGTH
        head = HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id)
        data += _MI_TLV + keyed_hmac(key, head + data, "sha1")
    if key is not None and sha256:
        # RFC 8489 §14.6: same, covering MESSAGE-INTEGRITY if it was added.
        length += 4 + sha256_length
        head = HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id)
        mac = keyed_hmac(key, head + data, "sha256")[:sha256_length]
        data += _TLV.pack(_MI256, sha256_length) + mac
    if fingerprint:
        length += 4 + _FINGERPRINT_LENGTH
    head = HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id)
    if fingerprint:
        # RFC 8489 §14.7: CRC-32 of everything before it, Length already counting it.
        crc = zlib.crc32(data, zlib.crc32(head)) ^ FINGERPRINT_XOR
        data += _FP_TLV + crc.to_bytes(4, "big")
    return head + data
