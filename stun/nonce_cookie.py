"""The RFC 8489 "nonce cookie": security feature bits a server prepends to its NONCE.

Owns the 13-character prefix of RFC 8489 §9.2: "obMatJos2" followed by the 4-character
base64 (RFC 4648) encoding of the 24-bit STUN Security Features set of §18.1. Its
presence tells a client the server implements RFC 8489, and its bits protect the
PASSWORD-ALGORITHMS and USERHASH features against bid-down attacks (§9.2.1).

Bit numbering (§9.2, §18.1): bit 0 is the most significant bit of the first byte and
bit 23 the least significant bit of the third, so "Password algorithms" (bit 0) is
0x800000 and "Username anonymity" (bit 1) is 0x400000 of the 24-bit value.

Note on RFC 8489 Appendix B.1: its nonce starts "obMatJos2AAAC", i.e. the value 0x000002,
which under the normative numbering is the unassigned bit 22 (it looks like Username
anonymity counted from the other end). We follow §9.2 and §18.1; unknown bits are kept
(`SecurityFeature` has boundary KEEP) so a parsed cookie round-trips exactly.
"""

from __future__ import annotations

import base64
import binascii
import enum

NONCE_COOKIE_PREFIX = "obMatJos2"
NONCE_COOKIE_LENGTH = 13  # the prefix and 4 base64 characters (§9.2)


class SecurityFeature(enum.Flag, boundary=enum.KEEP):
    """STUN Security Features (RFC 8489 §18.1), as bits of a 24-bit integer."""

    NONE = 0
    PASSWORD_ALGORITHMS = 1 << 23  # bit 0
    USERNAME_ANONYMITY = 1 << 22  # bit 1


def make_nonce_cookie(features: SecurityFeature = SecurityFeature.NONE) -> str:
    """The 13-character cookie for `features`; a server appends its own nonce after it."""
    value = features.value
    if not 0 <= value < 1 << 24:
        raise ValueError(f"security features {value:#x} do not fit 24 bits")
    return NONCE_COOKIE_PREFIX + base64.b64encode(value.to_bytes(3, "big")).decode("ascii")


def parse_nonce_cookie(nonce: str) -> SecurityFeature | None:
    """The features of the cookie `nonce` starts with, or None if it has no valid cookie."""
    if len(nonce) < NONCE_COOKIE_LENGTH or not nonce.startswith(NONCE_COOKIE_PREFIX):
        return None
    encoded = nonce[len(NONCE_COOKIE_PREFIX) : NONCE_COOKIE_LENGTH]
    if not encoded.isascii():
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None
    # 4 characters always decode to 3 bytes unless they contain "=" padding.
    if len(raw) != 3:
        return None
    return SecurityFeature(int.from_bytes(raw, "big"))
