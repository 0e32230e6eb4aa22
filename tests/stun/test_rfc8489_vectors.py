"""RFC 8489 Appendix B.1 (SHA-256 + USERHASH request), as corrected by erratum 6268.

What we decided, and why (https://www.rfc-editor.org/errata/eid6268, verified):

- The published B.1 bytes are wrong twice: the header Length says 0x9c, the size of the
  whole message instead of the 0x88 bytes after the header, and the request lacks the
  PASSWORD-ALGORITHM attribute that a SHA-256 key requires. The erratum's bytes (Length
  0x90, PASSWORD-ALGORITHM SHA-256 added, MESSAGE-INTEGRITY-SHA256 recomputed) are the
  right ones; `CORRECTED` below is them, and they verify with our code.
- We reproduce the published MAC too: it is HMAC-SHA256 over the header with Length 0x9c,
  which confirms the erratum's diagnosis (`test_published_mac_was_computed_with_length_0x9c`).
- Key: SHA-256("マトリックス:example.org:TheMatrIX") (RFC 8489 §18.5.1.2). The appendix calls
  "TheMatrIX" the password "after OpaqueString processing" of "The<U+00AD>M<U+00AA>tr<U+2168>";
  that mapping is SASLprep's (RFC 5389 days). OpaqueString keeps U+00AA and U+2168 (NFC,
  not NFKC) and refuses U+00AD (a default-ignorable code point), so we take "TheMatrIX"
  as the prepared password, as the vector's MAC requires.
- Its nonce cookie "obMatJos2AAAC" carries the 24-bit value 0x000002, which under the
  normative bit numbering (§9.2: bit 0 is the most significant) is unassigned bit 22.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from trelay.stun.attributes import MessageIntegritySha256, Nonce, Realm, UserHash
from trelay.stun.auth_attributes import PasswordAlgorithm
from trelay.stun.codes import MessageClass, Method, PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, opaque_string, userhash
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import (
    IntegrityAlgorithms,
    encode_signed,
    integrity_algorithms,
    verify_fingerprint,
    verify_integrity,
)
from trelay.stun.message import Message, decode_message
from trelay.stun.nonce_cookie import SecurityFeature, parse_nonce_cookie

USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
REALM = "example.org"
PASSWORD = "TheMatrIX"
NONCE = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
TRANSACTION_ID = bytes.fromhex("78ad3433c6ad72c029da412e")
USERHASH = bytes.fromhex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")

_ATTRIBUTES = (
    "001e0020"  # USERHASH attribute header
    "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    "00150029"  # NONCE attribute header
    "6f624d61744a6f7332414141"  # "obMatJos2AAA"
    "43662f2f3439396b39353464"  # "Cf//499k954d"
    "364f4c33346f4c3946535476"  # "6OL34oL9FSTv"
    "7936347341000000"  # "y64sA" and padding (3 bytes)
    "0014000b"  # REALM attribute header
    "6578616d706c652e6f726700"  # "example.org" and padding (1 byte)
)

CORRECTED = (
    bytes.fromhex(
        "00010090"  # Request type and message length
        "2112a442"  # Magic cookie
        "78ad3433c6ad72c029da412e"  # Transaction ID
    )
    + bytes.fromhex(_ATTRIBUTES)
    + bytes.fromhex(
        "001d0004"  # PASSWORD-ALGORITHM attribute header
        "00020000"  # SHA-256, parameters length 0
        "001c0020"  # MESSAGE-INTEGRITY-SHA256 attribute header
        "b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65"
    )
)

PUBLISHED = (
    bytes.fromhex(
        "0001009c"  # the wrong Length
        "2112a442"
        "78ad3433c6ad72c029da412e"
    )
    + bytes.fromhex(_ATTRIBUTES)
    + bytes.fromhex("001c0020e4686c8f0edeb59013e07090010a93efccbccc544c0a45d9f830aa6d6f735a01")
)


def sha256_key() -> bytes:
    return long_term_key(USERNAME, REALM, PASSWORD, PasswordAlgorithmId.SHA256)


def test_corrected_vector_decodes_to_every_attribute() -> None:
    message = decode_message(CORRECTED)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes == (
        UserHash(USERHASH),
        Nonce(NONCE),
        Realm(REALM),
        PasswordAlgorithm(PasswordAlgorithmId.SHA256, b""),
        MessageIntegritySha256(CORRECTED[-32:]),
    )


def test_userhash_matches_the_vector() -> None:
    assert userhash(USERNAME, REALM) == USERHASH
    assert hashlib.sha256(f"{USERNAME}:{REALM}".encode()).digest() == USERHASH


def test_sha256_key_is_sha256_of_user_realm_pass() -> None:
    assert sha256_key() == hashlib.sha256(f"{USERNAME}:{REALM}:{PASSWORD}".encode()).digest()
    assert len(sha256_key()) == 32


def test_corrected_vector_verifies_with_the_sha256_key_only() -> None:
    assert verify_integrity(CORRECTED, sha256_key())
    assert not verify_integrity(CORRECTED, long_term_key(USERNAME, REALM, PASSWORD))
    assert not verify_fingerprint(CORRECTED)
    assert integrity_algorithms(CORRECTED) == IntegrityAlgorithms(sha256_length=32)


def test_corrected_vector_reencodes_exactly() -> None:
    signed = decode_message(CORRECTED)
    message = Message(
        signed.method, signed.message_class, signed.transaction_id, signed.attributes[:-1]
    )
    out = encode_signed(message, sha256_key(), sha1=False, sha256=True, fingerprint=False)
    assert out == CORRECTED


def test_published_vector_is_rejected_for_its_length_field() -> None:
    with pytest.raises(StunDecodeError):
        decode_message(PUBLISHED)
    assert not verify_integrity(PUBLISHED, sha256_key())


def test_published_mac_was_computed_with_length_0x9c() -> None:
    # Erratum 6268's diagnosis, checked: HMAC input = header (Length 0x9c) + attributes.
    mac = hmac.digest(sha256_key(), PUBLISHED[:-36], "sha256")
    assert mac == PUBLISHED[-32:]
    # With the Length the RFC requires (pointing past MESSAGE-INTEGRITY-SHA256) it differs.
    fixed = PUBLISHED[:2] + (len(PUBLISHED) - 20).to_bytes(2, "big") + PUBLISHED[4:]
    assert not verify_integrity(fixed, sha256_key())


def test_the_appendix_password_is_not_an_opaquestring() -> None:
    # U+00AD SOFT HYPHEN is default-ignorable, disallowed by the FreeformClass.
    with pytest.raises(ValueError, match="U\\+00AD"):
        opaque_string("The\u00adM\u00aatr\u2168")
    # Without it, OpaqueString keeps U+00AA and U+2168: NFC, not SASLprep's NFKC.
    assert opaque_string("TheM\u00aatr\u2168") == "TheM\u00aatr\u2168"
    assert opaque_string(PASSWORD) == PASSWORD


def test_vector_nonce_cookie_is_bit_22() -> None:
    features = parse_nonce_cookie(NONCE)
    assert features is not None
    assert features.value == 0x000002
    assert SecurityFeature.PASSWORD_ALGORITHMS not in features
    assert SecurityFeature.USERNAME_ANONYMITY not in features
