"""Credential keys of STUN: the PRECIS OpaqueString profile, HMAC keys and USERHASH.

Owns how text credentials become key bytes:

- `opaque_string` (RFC 8265 §4.2, RFC 8264 §4.3, §7, §9): map non-ASCII spaces to
  U+0020, normalise to NFC, then require every code point to be allowed by the PRECIS
  FreeformClass and the result to be non-empty. ValueError otherwise.
- `short_term_key` (RFC 8489 §9.1.1): OpaqueString(password).
- `long_term_key` (RFC 8489 §9.2.2, §18.5.1): H(username ":" OpaqueString(realm) ":"
  OpaqueString(password)), H being MD5 or SHA-256 after PASSWORD-ALGORITHM. The username
  is used as it appears in USERNAME ("in which case OpaqueString has already been
  applied", §9.2.2), so it is not processed again here. For the printable-ASCII
  credentials everyone uses in practice this is exactly RFC 5389's
  MD5(username ":" realm ":" SASLprep(password)) and what aioice and coturn compute,
  MD5("user:realm:pass"); only empty or control-character realms and passwords differ
  (they are rejected here instead of being hashed).
- `userhash` (RFC 8489 §14.4): SHA-256(OpaqueString(username) ":" OpaqueString(realm)).

Deviation, documented: the contextual rules of PRECIS (CONTEXTJ for U+200C/U+200D,
CONTEXTO for the RFC 5892 exceptions) are implemented in their simple forms; ZERO WIDTH
NON-JOINER's Arabic-joining alternative is not, so such a password is rejected rather
than accepted (never silently changed).
"""

from __future__ import annotations

import hashlib
import unicodedata

from trelay.stun.codes import PasswordAlgorithmId

# RFC 5892 §2.6 exceptions that PRECIS reuses (RFC 8264 §9.6).
_EXCEPTION_PVALID = frozenset("\u00df\u03c2\u06fd\u06fe\u0f0b\u3007")
_EXCEPTION_DISALLOWED = frozenset("\u0640\u07fa\u302e\u302f\u3031\u3032\u3033\u3034\u3035\u303b")
_ARABIC_INDIC = frozenset(chr(c) for c in range(0x0660, 0x066A))
_EXTENDED_ARABIC_INDIC = frozenset(chr(c) for c in range(0x06F0, 0x06FA))
_CONTEXTO = frozenset("\u00b7\u0375\u05f3\u05f4\u30fb") | _ARABIC_INDIC | _EXTENDED_ARABIC_INDIC
_JOIN_CONTROLS = frozenset("\u200c\u200d")

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties), which the standard
# library does not expose; PRECIS disallows it (RFC 8264 §9.13).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Hangul_Syllable_Type L, V and T: "OldHangulJamo" (RFC 8264 §9.9).
_OLD_HANGUL_JAMO = (
    (0x1100, 0x11FF),
    (0xA960, 0xA97C),
    (0xD7B0, 0xD7C6),
    (0xD7CB, 0xD7FB),
)
# FreeformClass: LetterDigits (PVALID) and the ID_DIS-or-FREE_PVAL categories
# OtherLetterDigits, Spaces, Symbols and Punctuation (RFC 8264 §9.1, §9.10-9.12, §9.14-16).
_FREEFORM_CATEGORIES = frozenset(
    (
        "Ll", "Lu", "Lo", "Nd", "Lm", "Mn", "Mc",
        "Lt", "Nl", "No", "Me",
        "Zs",
        "Sm", "Sc", "Sk", "So",
        "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
    )
)  # fmt: skip
_VIRAMA = 9  # canonical combining class of a virama (RFC 5892 Appendix A.1, A.2)


def _in_ranges(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= code <= high for low, high in ranges)


def _is_noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _freeform_allowed(char: str) -> bool | None:
    """RFC 8264 §8 for the FreeformClass: True, False, or None for a contextual rule."""
    code = ord(char)
    if char in _EXCEPTION_PVALID:
        return True
    if char in _EXCEPTION_DISALLOWED:
        return False
    if char in _CONTEXTO or char in _JOIN_CONTROLS:
        return None
    category = unicodedata.category(char)
    if category == "Cn":
        return False  # Unassigned, and noncharacters, which are also Cn.
    if 0x21 <= code <= 0x7E:
        return True  # ASCII7
    if _in_ranges(code, _OLD_HANGUL_JAMO):
        return False
    if _in_ranges(code, _DEFAULT_IGNORABLE) or _is_noncharacter(code):
        return False
    if category == "Cc":
        return False
    if unicodedata.normalize("NFKC", char) != char:
        return True  # HasCompat: FREE_PVAL in the FreeformClass
    return category in _FREEFORM_CATEGORIES


def _script_prefix(char: str, *prefixes: str) -> bool:
    return unicodedata.name(char, "").startswith(prefixes)


def _context_allowed(text: str, index: int) -> bool:
    """The CONTEXTJ and CONTEXTO rules of RFC 5892 Appendix A (simple forms)."""
    char = text[index]
    before = text[index - 1] if index > 0 else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    if char in _JOIN_CONTROLS:
        return bool(before) and unicodedata.combining(before) == _VIRAMA
    if char == "\u00b7":  # MIDDLE DOT: between two 'l' (Catalan)
        return before == "l" and after == "l"
    if char == "\u0375":  # GREEK LOWER NUMERAL SIGN: followed by Greek
        return bool(after) and _script_prefix(after, "GREEK")
    if char in "\u05f3\u05f4":  # HEBREW GERESH, GERSHAYIM: preceded by Hebrew
        return bool(before) and _script_prefix(before, "HEBREW")
    if char == "\u30fb":  # KATAKANA MIDDLE DOT: some Hiragana, Katakana or Han
        return any(
            c != "\u30fb" and _script_prefix(c, "HIRAGANA", "KATAKANA", "CJK UNIFIED") for c in text
        )
    if char in _ARABIC_INDIC:
        return not _EXTENDED_ARABIC_INDIC.intersection(text)
    return not _ARABIC_INDIC.intersection(text)  # extended Arabic-Indic digits


def opaque_string(text: str) -> str:
    """Enforce the PRECIS OpaqueString profile (RFC 8265 §4.2.2); ValueError if refused."""
    # Additional mapping rule: any non-ASCII space (Zs) becomes U+0020.
    mapped = "".join(
        " " if char != " " and unicodedata.category(char) == "Zs" else char for char in text
    )
    # Normalization rule: NFC. Width, case and directionality rules do not apply.
    result = unicodedata.normalize("NFC", mapped)
    if not result:
        raise ValueError("OpaqueString: empty string")
    # Preparation checks the input, enforcement the result (RFC 8264 §7).
    _check_freeform(text)
    _check_freeform(result)
    return result


def _check_freeform(text: str) -> None:
    for index, char in enumerate(text):
        allowed = _freeform_allowed(char)
        if allowed is None:
            allowed = _context_allowed(text, index)
        if not allowed:
            raise ValueError(f"OpaqueString: code point U+{ord(char):04X} is not allowed")


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.1: key = OpaqueString(password), UTF-8."""
    return opaque_string(password).encode("utf-8")


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: PasswordAlgorithmId = PasswordAlgorithmId.MD5,
) -> bytes:
    """RFC 8489 §9.2.2, §18.5.1: 16 bytes for MD5, 32 for SHA-256.

    `username` is taken as it appears in USERNAME (already prepared); `realm` and
    `password` pass through OpaqueString (ValueError if refused).
    """
    text = f"{username}:{opaque_string(realm)}:{opaque_string(password)}".encode()
    if algorithm == PasswordAlgorithmId.MD5:
        # MD5 only because the RFC fixes it for legacy keys; the HMAC does the securing.
        return hashlib.md5(text, usedforsecurity=False).digest()
    if algorithm == PasswordAlgorithmId.SHA256:
        return hashlib.sha256(text).digest()
    raise ValueError(f"unknown password algorithm {algorithm}")


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: SHA-256(OpaqueString(username) ":" OpaqueString(realm)), 32 bytes."""
    return hashlib.sha256(f"{opaque_string(username)}:{opaque_string(realm)}".encode()).digest()
