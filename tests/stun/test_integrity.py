"""MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT: sign, verify, tamper."""

from __future__ import annotations

import hmac
import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun import integrity
from trelay.stun.attributes import (
    Attribute,
    Data,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    Software,
    UnknownAttribute,
    Username,
)
from trelay.stun.codes import AttributeType, MessageClass, Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import (
    IntegrityAlgorithms,
    encode_signed,
    fingerprint_matches,
    integrity_algorithms,
    keyed_hmac,
    verify_fingerprint,
    verify_integrity,
)
from trelay.stun.message import Message, decode_message, encode_message
from trelay.stun.strategies import SignedMessage, signed_messages

KEY = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
SHA256_LENGTHS = [16, 20, 24, 28, 32]


def request(*attributes: Attribute) -> Message:
    return Message(Method.BINDING, MessageClass.REQUEST, TID, attributes)


BASE = request(Username("evtj:h6vY"), Software("trelay test"), Data(b"\x01\x02\x03"))


def test_sha1_roundtrip() -> None:
    data = encode_signed(BASE, KEY)
    assert verify_integrity(data, KEY)
    assert verify_fingerprint(data)
    decoded = decode_message(data)
    assert decoded.attributes[:-2] == BASE.attributes
    assert [type(a) for a in decoded.attributes[-2:]] == [MessageIntegrity, Fingerprint]
    assert integrity_algorithms(data) == IntegrityAlgorithms(sha1=True, fingerprint=True)


@pytest.mark.parametrize("length", SHA256_LENGTHS)
def test_sha256_roundtrip_at_each_truncation(length: int) -> None:
    data = encode_signed(BASE, KEY, sha1=False, sha256=True, sha256_length=length)
    assert verify_integrity(data, KEY)
    assert verify_fingerprint(data)
    mi256 = decode_message(data).get(MessageIntegritySha256)
    assert mi256 is not None
    assert len(mi256.value) == length
    assert integrity_algorithms(data) == IntegrityAlgorithms(sha256_length=length, fingerprint=True)
    assert not verify_integrity(data, KEY + b"!")


@pytest.mark.parametrize("length", SHA256_LENGTHS)
def test_both_algorithms_in_rfc_order(length: int) -> None:
    data = encode_signed(BASE, KEY, sha256=True, sha256_length=length)
    kinds = [type(a) for a in decode_message(data).attributes[-3:]]
    assert kinds == [MessageIntegrity, MessageIntegritySha256, Fingerprint]
    assert verify_integrity(data, KEY)
    assert verify_fingerprint(data)
    info = integrity_algorithms(data)
    assert (info.sha1, info.sha256_length, info.fingerprint) == (True, length, True)
    assert info.sha256 and info.any_integrity


def test_sha256_is_checked_in_preference_to_sha1() -> None:
    data = bytearray(encode_signed(BASE, KEY, sha256=True, fingerprint=False))
    data[-1] ^= 1  # break the SHA-256 MAC, leave the SHA-1 MAC intact
    assert not verify_integrity(bytes(data), KEY)


def test_stripping_sha256_leaves_a_sha1_message_that_callers_must_notice() -> None:
    # With both MACs and no FINGERPRINT, renaming MESSAGE-INTEGRITY-SHA256 (here to REALM)
    # leaves a message whose MESSAGE-INTEGRITY still verifies: §9 makes everything after
    # MESSAGE-INTEGRITY ignorable. The bid-down shows in `integrity_algorithms`, which a
    # caller that requires SHA-256 (RFC 8489 §9.1.4, §9.2.5) must check.
    data = bytearray(encode_signed(BASE, KEY, sha256=True, fingerprint=False))
    assert integrity_algorithms(bytes(data)).sha256
    data[-36:-34] = struct.pack("!H", AttributeType.REALM)
    assert verify_integrity(bytes(data), KEY)
    assert integrity_algorithms(bytes(data)) == IntegrityAlgorithms(sha1=True)


def test_wrong_key_fails() -> None:
    for kwargs in ({}, {"sha1": False, "sha256": True}, {"sha256": True}):
        data = encode_signed(BASE, KEY, **kwargs)
        assert not verify_integrity(data, b"another key")
        assert not verify_integrity(data, b"")


def test_without_key_only_fingerprint() -> None:
    data = encode_signed(BASE)
    assert decode_message(data).attributes[-1] == Fingerprint(struct.unpack("!I", data[-4:])[0])
    assert verify_fingerprint(data)
    assert not verify_integrity(data, KEY)
    assert integrity_algorithms(data) == IntegrityAlgorithms(fingerprint=True)


def test_nothing_to_add() -> None:
    data = encode_signed(BASE, KEY, sha1=False, fingerprint=False)
    assert data == encode_message(BASE)
    assert not verify_fingerprint(data)
    assert integrity_algorithms(data) == IntegrityAlgorithms()


def test_empty_key_is_a_key() -> None:
    data = encode_signed(BASE, b"")
    assert verify_integrity(data, b"")
    assert not verify_integrity(data, KEY)


@pytest.mark.parametrize(
    "attribute",
    [
        MessageIntegrity(bytes(20)),
        MessageIntegritySha256(bytes(32)),
        Fingerprint(0),
        UnknownAttribute(AttributeType.MESSAGE_INTEGRITY, bytes(20)),
    ],
)
def test_refuses_messages_already_carrying_computed_attributes(attribute: Attribute) -> None:
    with pytest.raises(ValueError):
        encode_signed(BASE.with_attributes(attribute), KEY)


@pytest.mark.parametrize("length", [0, 12, 15, 18, 33, 36])
def test_refuses_invalid_sha256_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        encode_signed(BASE, KEY, sha256=True, sha256_length=length)


def test_refuses_a_body_over_65535_bytes() -> None:
    big = request(Data(bytes(0xFFFF - 8 - 4)))  # fits alone, not with MESSAGE-INTEGRITY
    assert len(encode_message(big)) == 20 + 0xFFF8
    with pytest.raises(ValueError):
        encode_signed(big, KEY)


def _append_tlv(data: bytes, kind: int, value: bytes) -> bytes:
    tlv = struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
    out = data + tlv
    return out[:2] + struct.pack("!H", len(out) - 20) + out[4:]


def test_attributes_after_message_integrity_are_ignored() -> None:
    signed = encode_signed(BASE, KEY, fingerprint=False)
    tampered = _append_tlv(signed, AttributeType.SOFTWARE, b"added later")
    tampered = _append_tlv(tampered, AttributeType.USERNAME, b"mallory")
    decoded = decode_message(tampered)
    assert decoded.attributes == decode_message(signed).attributes
    # Ignored attributes are outside the MAC: §14.5 adjusts Length to end at MI.
    assert verify_integrity(tampered, KEY)


def test_sha256_after_sha1_counts_and_sha1_after_sha256_is_ignored() -> None:
    signed = encode_signed(BASE, KEY, sha1=False, sha256=True, fingerprint=False)
    tampered = _append_tlv(signed, AttributeType.MESSAGE_INTEGRITY, bytes(20))
    assert decode_message(tampered).get(MessageIntegrity) is None
    assert integrity_algorithms(tampered) == IntegrityAlgorithms(sha256_length=32)
    assert verify_integrity(tampered, KEY)


def test_fingerprint_must_be_last() -> None:
    signed = encode_signed(BASE, KEY)
    tampered = _append_tlv(signed, AttributeType.SOFTWARE, b"x")
    assert not verify_fingerprint(tampered)
    assert not integrity_algorithms(tampered).fingerprint


def test_truncated_sha256_of_invalid_length_fails() -> None:
    signed = encode_signed(BASE, KEY, sha1=False, sha256=True, sha256_length=16, fingerprint=False)
    # Re-label the 16-byte value as 12 bytes (and 4 bytes of padding): not a valid length.
    relabeled = bytearray(signed)
    relabeled[-18:-16] = struct.pack("!H", 12)
    assert not verify_integrity(bytes(relabeled), KEY)


def test_message_integrity_of_wrong_length_fails() -> None:
    unsigned = encode_message(BASE)
    data = _append_tlv(unsigned, AttributeType.MESSAGE_INTEGRITY, bytes(16))
    assert not verify_integrity(data, KEY)


def test_fingerprint_of_wrong_length_fails() -> None:
    data = _append_tlv(encode_message(BASE), AttributeType.FINGERPRINT, bytes(8))
    assert not verify_fingerprint(data)


# --- every single-bit flip is caught ---------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20)
_attributes = st.lists(
    st.one_of(
        _text.map(Username),
        _text.map(Software),
        st.binary(max_size=40).map(Data),
    ),
    max_size=4,
)
_messages = st.builds(
    Message,
    st.sampled_from([Method.BINDING, Method.ALLOCATE, Method.REFRESH]),
    st.sampled_from(list(MessageClass)),
    st.binary(min_size=12, max_size=12),
    _attributes.map(tuple),
)
_signing = st.sampled_from(
    [
        {"sha1": True, "sha256": False},
        {"sha1": False, "sha256": True, "sha256_length": 16},
        {"sha1": False, "sha256": True, "sha256_length": 32},
        {"sha1": True, "sha256": True, "sha256_length": 20},
    ]
)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


@given(message=_messages, signing=_signing, position=st.floats(0, 1, exclude_max=True))
def test_any_single_bit_flip_is_detected(
    message: Message, signing: dict[str, object], position: float
) -> None:
    data = encode_signed(message, KEY, **signing)  # type: ignore[arg-type]
    assert verify_integrity(data, KEY) and verify_fingerprint(data)
    flipped = _flip(data, int(position * len(data) * 8))
    assert not (verify_integrity(flipped, KEY) and verify_fingerprint(flipped))


@given(message=_messages, position=st.floats(0, 1, exclude_max=True))
def test_any_single_bit_flip_breaks_integrity_alone(message: Message, position: float) -> None:
    # Without FINGERPRINT, the MAC alone covers every bit (header, padding, MAC value).
    data = encode_signed(message, KEY, sha1=False, sha256=True, fingerprint=False)
    flipped = _flip(data, int(position * len(data) * 8))
    assert not verify_integrity(flipped, KEY)


@given(message=_messages, position=st.floats(0, 1, exclude_max=True))
def test_any_single_bit_flip_breaks_the_fingerprint_alone(
    message: Message, position: float
) -> None:
    data = encode_signed(message)
    flipped = _flip(data, int(position * len(data) * 8))
    assert not verify_fingerprint(flipped)


@given(
    signed=signed_messages(),
    position=st.none() | st.floats(0, 1, exclude_max=True),
)
def test_fingerprint_matches_agrees_with_verify_fingerprint_on_what_decodes(
    signed: SignedMessage, position: float | None
) -> None:
    # The server's shortcut for a message it decoded: the same answer as the full check,
    # whether the bytes are intact or one bit is flipped (when they still decode).
    data = signed.data
    if position is not None:
        data = _flip(data, int(position * len(data) * 8))
    try:
        fingerprint = decode_message(data).get(Fingerprint)
    except StunDecodeError:
        return
    if fingerprint is not None:
        assert fingerprint_matches(data, fingerprint.value) == verify_fingerprint(data)
    if position is None and fingerprint is not None:
        assert fingerprint_matches(data, fingerprint.value)


@given(st.binary(max_size=120))
def test_verifiers_never_raise_on_random_bytes(data: bytes) -> None:
    # Random bytes carry no valid HMAC or CRC-32 (a chance of 2**-32 at best).
    assert not verify_integrity(data, KEY)
    assert not verify_fingerprint(data)
    _assert_consistent(data, integrity_algorithms(data))


@given(st.binary(max_size=30).map(lambda b: b + bytes(-len(b) % 4)), st.binary(min_size=2))
def test_verifiers_never_raise_on_framed_garbage(body: bytes, head: bytes) -> None:
    # A header whose Length matches, so the TLV walk runs on arbitrary attribute bytes.
    data = head[:2].ljust(2, b"\0") + struct.pack("!H", len(body)) + bytes(16) + body
    assert not verify_integrity(data, KEY)
    assert not verify_fingerprint(data)
    _assert_consistent(data, integrity_algorithms(data))


def _assert_consistent(data: bytes, found: IntegrityAlgorithms) -> None:
    """What `integrity_algorithms` reports is there: its attribute type is in the body."""
    reported = (
        (found.sha256_length is not None, AttributeType.MESSAGE_INTEGRITY_SHA256),
        (found.sha1, AttributeType.MESSAGE_INTEGRITY),
        (found.fingerprint, AttributeType.FINGERPRINT),
    )
    for present, kind in reported:
        assert not present or struct.pack("!H", kind) in data[20:], kind


# --- interoperability with aioice's STUN code -------------------------------------------


def test_aioice_signed_message_verifies_here() -> None:
    theirs = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.REQUEST,
        transaction_id=TID,
    )
    theirs.attributes["USERNAME"] = "evtj:h6vY"
    theirs.add_message_integrity(KEY)
    theirs.add_fingerprint()
    data = bytes(theirs)
    assert verify_integrity(data, KEY)
    assert verify_fingerprint(data)


def test_our_signed_message_verifies_in_aioice() -> None:
    data = encode_signed(request(Username("evtj:h6vY")), KEY)
    parsed = aioice_stun.parse_message(data)
    assert parsed.attributes["USERNAME"] == "evtj:h6vY"
    assert parsed.check_message_integrity(KEY)
    assert not parsed.check_message_integrity(b"wrong")


@given(
    key=st.binary(max_size=80),
    data=st.binary(max_size=600),
    digest=st.sampled_from(["sha1", "sha256"]),
)
def test_keyed_hmac_is_hmac(key: bytes, data: bytes, digest: str) -> None:
    # Twice: the second answer comes from the kept state, which a copy must leave as it was.
    assert keyed_hmac(key, data, digest) == hmac.digest(key, data, digest)
    assert keyed_hmac(key, data, digest) == hmac.digest(key, data, digest)


def test_keyed_hmac_keeps_a_bounded_number_of_keys() -> None:
    for index in range(integrity._MAX_KEYED + 10):
        keyed_hmac(index.to_bytes(4, "big"), b"data", "sha1")
        assert len(integrity._keyed) <= integrity._MAX_KEYED
