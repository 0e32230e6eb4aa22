"""Long-term auth pieces: the nonce stamper, TURN REST usernames, the authenticator's
order of checks (RFC 8489 §9.2.4), and the per-source rate limit on unauthenticated
requests (design §6)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.turn_harness import Client, assert_success, error_code, make_server
from trelay.stun.attributes import RequestedTransport
from trelay.stun.codes import Method
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import (
    SharedSecrets,
    StaticUsers,
    parse_rest_username,
    rest_password,
)
from trelay.turn.nonces import NonceStamper

KEY = b"k" * 32
CLIENT = ("203.0.113.5", 50000)
NOW = 1_700_000_000.0

# --- nonces ------------------------------------------------------------------------------


def test_nonce_round_trip_and_alphabet() -> None:
    stamper = NonceStamper(KEY, lifetime=60)
    nonce = stamper.mint(CLIENT, NOW)
    assert len(nonce) == 15 and nonce.isascii() and '"' not in nonce and "\\" not in nonce
    assert stamper.is_valid(nonce, CLIENT, NOW)
    assert stamper.is_valid(nonce, CLIENT, NOW + 60)


def test_nonce_expires() -> None:
    stamper = NonceStamper(KEY, lifetime=60)
    nonce = stamper.mint(CLIENT, NOW)
    assert not stamper.is_valid(nonce, CLIENT, NOW + 61)


@pytest.mark.parametrize("other", [("203.0.113.6", 50000), ("203.0.113.5", 50001)])
def test_nonce_is_bound_to_the_client_address(other: tuple[str, int]) -> None:
    stamper = NonceStamper(KEY)
    assert not stamper.is_valid(stamper.mint(CLIENT, NOW), other, NOW)


def test_nonce_from_another_key_is_stale() -> None:
    nonce = NonceStamper(b"x" * 32).mint(CLIENT, NOW)
    assert not NonceStamper(KEY).is_valid(nonce, CLIENT, NOW)


def test_nonce_expiry_cannot_be_extended_without_the_key() -> None:
    stamper = NonceStamper(KEY, lifetime=60)
    nonce = stamper.mint(CLIENT, NOW)
    raw = base64.urlsafe_b64decode(nonce + "=")
    later = (int(NOW) + 10_000).to_bytes(4, "big")
    forged = base64.urlsafe_b64encode(later + raw[4:]).rstrip(b"=").decode()
    assert not stamper.is_valid(forged, CLIENT, NOW + 100)


@given(st.text(max_size=40))
def test_any_text_is_rejected_without_raising(nonce: str) -> None:
    assert not NonceStamper(KEY).is_valid(nonce, CLIENT, NOW)


def test_short_nonce_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        NonceStamper(b"short")


# --- TURN REST usernames ---------------------------------------------------------------


@pytest.mark.parametrize(
    "username, parsed",
    [
        ("1700000000:alice", ("alice", 1700000000.0)),
        ("alice:1700000000", ("alice", 1700000000.0)),
        ("1700000000:a:b", ("a:b", 1700000000.0)),
        ("a:b:1700000000", ("a:b", 1700000000.0)),
        ("alice", None),
        ("alice:bob", None),
        ("²:alice", None),  # str.isdigit() is true for "²"; float() refuses it
        ("alice:١٢٣", None),  # non-ASCII digits are not Unix seconds here
        (":", None),
    ],
)
def test_parse_rest_username(username: str, parsed: tuple[str, float] | None) -> None:
    assert parse_rest_username(username) == parsed


@given(st.text(max_size=30) | st.text(alphabet="01:a\u00b2\u0661", max_size=12))
def test_parse_rest_username_never_raises(username: str) -> None:
    parsed = parse_rest_username(username)
    fields = username.split(":")
    if parsed is None:
        # Neither end is an expiry: no colon, or no ASCII digits alone before or after it.
        assert len(fields) == 1 or not (_seconds(fields[0]) or _seconds(fields[-1]))
        return
    # The expiry is an ASCII-digit field at one end, the user all the rest.
    user, expiry = parsed
    first, last = fields[0], fields[-1]
    assert (_seconds(first) and (user, expiry) == (username[len(first) + 1 :], float(first))) or (
        _seconds(last) and (user, expiry) == (username[: -len(last) - 1], float(last))
    )


def _seconds(text: str) -> bool:
    return text != "" and all(c in "0123456789" for c in text)


def test_rest_password_is_base64_hmac_sha1() -> None:
    # HMAC-SHA1("secret", "1700000000:alice"), base64; computed independently with openssl.
    password = rest_password(b"secret", "1700000000:alice")
    assert password == "d8soP47RbdIKLDUOpnJPVQyq5Ts="
    assert password != rest_password(b"other", "1700000000:alice")


def test_shared_secrets_give_one_candidate_per_secret() -> None:
    source = SharedSecrets([b"new", b"old"], "example.org")
    candidates = source.candidates("1700000000:alice")
    assert len(candidates) == 2 and len({c.key for c in candidates}) == 2
    assert {c.identity for c in candidates} == {"alice"}
    assert {c.expires_at for c in candidates} == {1700000000.0}
    assert source.candidates("alice") == ()


def test_static_users() -> None:
    users = StaticUsers({"alice": "secret"}, "example.org")
    (credential,) = users.candidates("alice")
    assert credential.identity == "alice" and credential.expires_at is None
    assert users.candidates("bob") == ()


# --- rate limit ------------------------------------------------------------------------


# The limiter itself: tests/turn/test_rate_limit.py.


def test_server_drops_unauthenticated_requests_after_the_burst_only() -> None:
    config = TurnConfig(
        realm="example.org", relay_host="198.51.100.1",
        unauthenticated_rate=1.0, unauthenticated_burst=5,
    )  # fmt: skip
    server = make_server(config)
    c = Client(server)
    c.authenticate()  # spends one token

    def anonymous() -> int | None:
        reply = c.send(c.request(Method.ALLOCATE, RequestedTransport(17), sign=False), False)
        return None if reply is None else error_code(reply)

    assert [anonymous() for _ in range(5)] == [401, 401, 401, 401, None]
    # Authenticated requests from the same source are never limited.
    for _ in range(10):
        assert error_code(c.call(Method.REFRESH)) == 437
    assert_success(c, c.allocate())
    # Another source has its own bucket.
    other = Client(server, address=("203.0.113.77", 1))
    other.authenticate()
    # Time refills the bucket: one token per second.
    c.now = 2.0
    assert [anonymous() for _ in range(3)] == [401, 401, None]
