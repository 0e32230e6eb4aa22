"""The RFC 8489 §9.2 nonce cookie and its security feature bits (§18.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.nonce_cookie import (
    NONCE_COOKIE_LENGTH,
    SecurityFeature,
    make_nonce_cookie,
    parse_nonce_cookie,
)

BOTH = SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY


@pytest.mark.parametrize(
    "features,cookie",
    [
        # 24 bits, bit 0 = most significant bit of the first byte, base64 of 3 bytes.
        (SecurityFeature.NONE, "obMatJos2AAAA"),  # 00 00 00
        (SecurityFeature.PASSWORD_ALGORITHMS, "obMatJos2gAAA"),  # 80 00 00
        (SecurityFeature.USERNAME_ANONYMITY, "obMatJos2QAAA"),  # 40 00 00
        (BOTH, "obMatJos2wAAA"),  # c0 00 00
    ],
)
def test_cookie_layout(features: SecurityFeature, cookie: str) -> None:
    assert make_nonce_cookie(features) == cookie
    assert len(cookie) == NONCE_COOKIE_LENGTH
    assert parse_nonce_cookie(cookie + "server-nonce-part") == features
    assert parse_nonce_cookie(cookie) == features


def test_bit_positions() -> None:
    assert SecurityFeature.PASSWORD_ALGORITHMS.value == 0x800000  # bit 0
    assert SecurityFeature.USERNAME_ANONYMITY.value == 0x400000  # bit 1


def test_default_is_no_features() -> None:
    assert make_nonce_cookie() == "obMatJos2AAAA"


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "f//499k954d6OL34oL9FSTvy64sA",  # RFC 5769: a nonce without cookie
        "obMatJos2",
        "obMatJos2AAA",  # one character short
        "obmatjos2AAAA",  # the prefix is case-sensitive
        "xobMatJos2AAAA",
        "obMatJos2AA==",  # padding: not 3 bytes
        "obMatJos2A!AA",
        "obMatJos2AA\u00e9A",
    ],
)
def test_nonces_without_a_valid_cookie(nonce: str) -> None:
    assert parse_nonce_cookie(nonce) is None


def test_unknown_bits_are_kept() -> None:
    features = parse_nonce_cookie("obMatJos2AAAC")
    assert features is not None
    assert features.value == 2
    assert make_nonce_cookie(features) == "obMatJos2AAAC"


def test_too_many_bits_are_refused() -> None:
    with pytest.raises(ValueError):
        make_nonce_cookie(SecurityFeature(1 << 24))


@given(st.integers(0, (1 << 24) - 1), st.text(max_size=20))
def test_roundtrip(value: int, rest: str) -> None:
    cookie = make_nonce_cookie(SecurityFeature(value))
    features = parse_nonce_cookie(cookie + rest)
    assert features is not None
    assert features.value == value


@given(st.text(max_size=30) | st.text(max_size=8).map(lambda rest: "obMatJos2" + rest))
def test_parse_never_raises(nonce: str) -> None:
    result = parse_nonce_cookie(nonce)
    # Features come only from a cookie, and are exactly what its 13 characters encode.
    assert result is None or make_nonce_cookie(result) == nonce[:13]
