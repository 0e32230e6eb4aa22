"""OpaqueString (RFC 8265 §4.2), short- and long-term keys and USERHASH (RFC 8489)."""

from __future__ import annotations

import hashlib
from typing import cast

import pytest
from aioice.turn import make_integrity_key
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.codes import PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, opaque_string, short_term_key, userhash


@pytest.mark.parametrize(
    "text,expected",
    [
        ("user", "user"),
        ("correct horse battery staple", "correct horse battery staple"),
        ("a\u00a0b", "a b"),  # NO-BREAK SPACE -> SPACE (additional mapping rule)
        ("a\u3000b", "a b"),  # IDEOGRAPHIC SPACE -> SPACE
        ("a\u2009b", "a b"),  # THIN SPACE -> SPACE
        ("e\u0301", "\u00e9"),  # NFC composes
        ("\u212b", "\u00c5"),  # ANGSTROM SIGN -> A WITH RING (canonical)
        ("\u00aa\u2168", "\u00aa\u2168"),  # NFC, not NFKC: compatibility forms kept
        ("\uff21", "\uff21"),  # FULLWIDTH A: no width mapping in OpaqueString
        ("Passw\u00f6rd", "Passw\u00f6rd"),
        ("\u30de\u30c8\u30ea\u30c3\u30af\u30b9", "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"),
        ("\U0001f600 smile", "\U0001f600 smile"),  # symbols are FREE_PVAL
        ("stra\u00dfe", "stra\u00dfe"),  # exception PVALID
        ("l\u00b7l", "l\u00b7l"),  # MIDDLE DOT between two 'l'
        ("\u0915\u094d\u200d", "\u0915\u094d\u200d"),  # ZWJ after a virama
        ("\u30ab\u30fb\u30ab", "\u30ab\u30fb\u30ab"),  # KATAKANA MIDDLE DOT with Katakana
        ("\u0375\u03b1", "\u0375\u03b1"),  # GREEK LOWER NUMERAL SIGN before Greek
        ("\u05d0\u05f3", "\u05d0\u05f3"),  # HEBREW GERESH after Hebrew
        ("\u0661\u0662", "\u0661\u0662"),  # Arabic-Indic digits, not mixed
    ],
)
def test_opaque_string_accepts_and_maps(text: str, expected: str) -> None:
    assert opaque_string(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00",
        "tab\there",
        "new\nline",
        "del\x7f",
        "\u0085",  # NEXT LINE (C1 control)
        "soft\u00adhyphen",  # default ignorable
        "zero\u200bwidth",  # ZERO WIDTH SPACE, default ignorable
        "\ufeff",  # BYTE ORDER MARK
        "line\u2028sep",  # Zl
        "\ue000",  # private use
        "\u0378",  # unassigned
        "\uffff",  # noncharacter
        "\ufdd0",  # noncharacter
        "\ud800",  # lone surrogate
        "\u1100\u1161",  # old Hangul jamo
        "\u0640",  # exception DISALLOWED (ARABIC TATWEEL)
        "a\u200db",  # ZWJ not after a virama
        "a\u00b7b",  # MIDDLE DOT not between 'l's
        "\u30fb",  # KATAKANA MIDDLE DOT alone
        "\u0375a",  # GREEK LOWER NUMERAL SIGN before Latin
        "a\u05f3",  # HEBREW GERESH after Latin
        "\u0661\u06f1",  # Arabic-Indic mixed with extended Arabic-Indic
        "\u06f1\u0661",
    ],
)
def test_opaque_string_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="OpaqueString"):
        opaque_string(text)


@given(st.text(max_size=20))
def test_opaque_string_is_idempotent_or_refuses(text: str) -> None:
    try:
        once = opaque_string(text)
    except ValueError:
        return
    assert opaque_string(once) == once
    assert once


_PRINTABLE_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@given(_PRINTABLE_ASCII)
def test_opaque_string_is_identity_on_printable_ascii(text: str) -> None:
    assert opaque_string(text) == text


def test_short_term_key_is_the_prepared_password() -> None:
    assert short_term_key("VOkJxbRl1RmTxUk/WvJxBt") == b"VOkJxbRl1RmTxUk/WvJxBt"
    assert short_term_key("a\u00a0b") == b"a b"
    assert short_term_key("e\u0301") == "\u00e9".encode()
    with pytest.raises(ValueError):
        short_term_key("")


def test_long_term_key_rfc8489_example() -> None:
    # RFC 8489 §9.2.2: MD5("user:realm:pass").
    assert long_term_key("user", "realm", "pass") == bytes.fromhex(
        "8493fbc53ba582fb4c044c456bdc40eb"
    )


@given(_PRINTABLE_ASCII, _PRINTABLE_ASCII, _PRINTABLE_ASCII)
def test_long_term_key_matches_classic_clients(username: str, realm: str, password: str) -> None:
    # aioice (and coturn) compute MD5(username ":" realm ":" password) with no preparation.
    key = long_term_key(username, realm, password)
    assert key == make_integrity_key(username, realm, password)
    assert len(key) == 16


def test_long_term_key_sha256() -> None:
    key = long_term_key("user", "realm", "pass", PasswordAlgorithmId.SHA256)
    assert key == hashlib.sha256(b"user:realm:pass").digest()


def test_long_term_key_prepares_realm_and_password_but_not_username() -> None:
    decomposed, composed = "e\u0301", "\u00e9"
    assert long_term_key("u", decomposed, decomposed) == long_term_key("u", composed, composed)
    # The username is used as sent in USERNAME (RFC 8489 §9.2.2), already prepared.
    assert long_term_key(decomposed, "r", "p") != long_term_key(composed, "r", "p")
    assert long_term_key(decomposed, "r", "p") == hashlib.md5(f"{decomposed}:r:p".encode()).digest()


@pytest.mark.parametrize("realm,password", [("", "pass"), ("realm", ""), ("realm", "a\x00")])
def test_long_term_key_refuses_unpreparable_input(realm: str, password: str) -> None:
    with pytest.raises(ValueError):
        long_term_key("user", realm, password)


def test_long_term_key_refuses_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        long_term_key("user", "realm", "pass", cast(PasswordAlgorithmId, 3))


def test_userhash() -> None:
    assert userhash("user", "realm") == hashlib.sha256(b"user:realm").digest()
    # Both fields pass through OpaqueString (RFC 8489 §14.4).
    assert userhash("e\u0301", "r\u00a0s") == userhash("\u00e9", "r s")
    with pytest.raises(ValueError):
        userhash("", "realm")
